package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"tend.dev/tend/internal/devcluster"
)

// aptUpdate refreshes the host's package lists at most once per test
// process, when a download fails on missing or stale lists.
var aptUpdate struct {
	sync.Mutex
	done bool
}

// DebianPackages returns real Debian packages for a test machine's apt
// repository (see AptRepo): pkgs and their dependency closure (Depends and
// Pre-Depends, no Recommends), minus what the machine image already has
// installed. The host's apt picks them from its own sources and package
// lists, with the image's dpkg status in place of the host's, so they are
// the versions the image's apt chooses from a repository of just these
// files, upgrades the closure needs (say, perl-base for a newer perl)
// included. Install them on a machine with apt-get install pkgs.
//
// They are downloaded once into ~/.cache/tend/debs/<key> (key: a hash of
// pkgs, the architecture and the image's dpkg status, so a rebuilt image
// gets its own set) and reused afterwards. When apt cannot fetch them, the
// host's package lists are refreshed once (apt-get update, as root) and the
// download tried again; if that fails too, the test fails with apt's output.
func DebianPackages(t testing.TB, pkgs ...string) []Deb {
	t.Helper()
	if len(pkgs) == 0 {
		t.Fatal("DebianPackages: name at least one package")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Fatalf("real Debian packages for test machines are downloaded with the host's apt-get, which is missing (the tests need a Debian host): %v", err)
	}
	img := MachineImage(t)
	status, err := os.ReadFile(filepath.Join(img, "var/lib/dpkg/status"))
	if err != nil {
		t.Fatalf("read the machine image's installed packages: %v (remove %s to have it built again)", err, img)
	}
	archOut, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		t.Fatalf("dpkg --print-architecture: %v", err)
	}
	arch := strings.TrimSpace(string(archOut))
	names := slices.Compact(slices.Sorted(slices.Values(pkgs)))
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", strings.Join(names, " "), arch)
	h.Write(status)
	key := hex.EncodeToString(h.Sum(nil))[:16]

	root := filepath.Join(devcluster.CacheDir(), "debs")
	dir := filepath.Join(root, key)
	if debs := cachedDebs(t, dir); debs != nil {
		return debs
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	// Packages testing in parallel share the cache: one downloads, the others wait.
	lock, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if debs := cachedDebs(t, dir); debs != nil {
		return debs
	}
	tmp, err := os.MkdirTemp(root, key+".tmp-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	t.Logf("downloading %s and their dependencies into %s (once)", strings.Join(names, " "), dir)
	download := func() ([]byte, error) {
		return aptDownload(img, arch, tmp, t.TempDir(), names)
	}
	out, err := download()
	if err != nil && os.Geteuid() == 0 {
		// Most often the lists are missing (a fresh host) or stale (the
		// mirror dropped the versions they name): refresh them once.
		if upd := refreshAptLists(t); upd != nil {
			out = append(append(out, "\n>> apt-get update\n"...), upd...)
			again, err2 := download()
			out, err = append(out, again...), err2
		}
	}
	if err != nil {
		t.Fatalf("the host's apt could not download %s for the test machines: %v\n%s\n"+
			"(are the names right? the host needs a reachable Debian bookworm source in /etc/apt/sources.list or sources.list.d; try: apt-get update && apt-cache policy %s)",
			strings.Join(names, " "), err, out, strings.Join(names, " "))
	}
	for _, junk := range []string{"partial", "lock"} {
		os.RemoveAll(filepath.Join(tmp, junk))
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	debs := cachedDebs(t, dir)
	if debs == nil {
		t.Fatalf("apt downloaded nothing for %s: the machine image has them all already?\n%s", strings.Join(names, " "), out)
	}
	return debs
}

// aptDownload runs the host's apt as if it installed names on the image:
// the host's sources, lists and preferences, the image's dpkg status, and
// a private archive directory and package cache.
func aptDownload(img, arch, archives, scratch string, names []string) ([]byte, error) {
	args := []string{"install", "--download-only", "-y", "-q",
		"-o", "Dir::State::status=" + filepath.Join(img, "var/lib/dpkg/status"),
		"-o", "Dir::State::extended_states=" + filepath.Join(scratch, "extended_states"),
		"-o", "Dir::Cache::archives=" + archives,
		// No cache of the host's packages: it would describe the host's status.
		"-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
		"-o", "APT::Architecture=" + arch, "-o", "APT::Architectures::=" + arch,
		"-o", "APT::Install-Recommends=false", "-o", "APT::Install-Suggests=false",
		// The archive directory is root's: don't drop to _apt to write it.
		"-o", "APT::Sandbox::User=root",
	}
	cmd := exec.Command("apt-get", append(append(args, "--"), names...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	return cmd.CombinedOutput()
}

// refreshAptLists runs apt-get update on the host once per process and
// returns its output; nil when it ran already.
func refreshAptLists(t testing.TB) []byte {
	t.Helper()
	aptUpdate.Lock()
	defer aptUpdate.Unlock()
	if aptUpdate.done {
		return nil
	}
	aptUpdate.done = true
	t.Logf("apt could not fetch the packages; refreshing the host's package lists (apt-get update) and trying again")
	// A source that fails (say, a third-party one off the network) need not
	// stop the retry: its output goes into the failure message, if any.
	out, err := exec.Command("apt-get", "update", "-q").CombinedOutput()
	if err != nil {
		out = append(out, fmt.Sprintf("apt-get update: %v\n", err)...)
	}
	return out
}

// cachedDebs lists the .debs of a complete download directory, or returns
// nil when there is none.
func cachedDebs(t testing.TB, dir string) []Deb {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.deb"))
	if err != nil || len(files) == 0 {
		return nil
	}
	debs := make([]Deb, 0, len(files))
	for _, f := range files {
		// apt names them package_version_arch.deb, the version escaped (%3a for the epoch's colon).
		parts := strings.Split(strings.TrimSuffix(filepath.Base(f), ".deb"), "_")
		if len(parts) != 3 {
			t.Fatalf("%s is not named package_version_arch.deb (remove %s to download again)", f, dir)
		}
		v, err := url.PathUnescape(parts[1])
		if err != nil {
			t.Fatalf("%s: %v (remove %s to download again)", f, err, dir)
		}
		debs = append(debs, Deb{Name: parts[0], Version: v, File: f})
	}
	return debs
}
