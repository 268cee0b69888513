package testenv_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"tend.dev/tend/internal/testenv"
)

// TestDebianPackages installs real restic and PostgreSQL 15 on a test
// machine through the local apt repository, with no outside network. The
// install takes 16-21 s on 2 cores (80 MB: unpacking perl, LLVM and
// ICU takes half of it, then initdb and the start of the main cluster);
// the download, once, about 3 s; the whole test about 20 s.
func TestDebianPackages(t *testing.T) {
	debs := testenv.DebianPackages(t, "restic", "postgresql")
	names := map[string]string{}
	for _, d := range debs {
		names[d.Name] = d.Version
	}
	for _, want := range []string{"restic", "postgresql", "postgresql-15", "postgresql-common"} {
		if names[want] == "" {
			t.Errorf("%s is not among the downloaded packages: %v", want, names)
		}
	}
	// The image has these already: they are not downloaded again.
	for _, have := range []string{"libc6", "systemd", "openssl"} {
		if names[have] != "" {
			t.Errorf("%s %s was downloaded, but the machine image has it installed", have, names[have])
		}
	}
	start := time.Now()
	if again := testenv.DebianPackages(t, "postgresql", "restic", "postgresql"); !slices.Equal(files(again), files(debs)) {
		t.Errorf("a second call did not reuse the download:\n%v\n%v", again, debs)
	} else if d := time.Since(start); d > 2*time.Second {
		t.Errorf("reusing the download took %s", d)
	}

	ms := testenv.NewMachines(t, 1)
	m := ms.List[0]
	line := ms.AptRepo(t, debs)
	m.Run(t, fmt.Sprintf("printf '%%s\\n' '%s' >/etc/apt/sources.list.d/x.list", strings.TrimSpace(line)))
	// The image has no /etc/hosts and nspawn gives the machine the host's
	// resolv.conf, whose server it cannot reach: each lookup of the
	// machine's own name (ssl-cert's postinst runs hostname -f) or of
	// localhost would wait 10-20 s for DNS.
	m.Run(t, fmt.Sprintf("printf '127.0.0.1 localhost\\n::1 localhost ip6-localhost ip6-loopback\\n127.0.1.1 %s\\n' >/etc/hosts", m.Name))
	start = time.Now()
	m.Run(t, "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q restic postgresql")
	t.Logf("apt-get install restic postgresql on the machine: %s", time.Since(start).Round(time.Second))

	// The machine's apt installed exactly the versions downloaded: the
	// closure is consistent with what the image's apt chooses.
	installed := map[string]string{}
	for l := range strings.Lines(m.Run(t, "dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\\n'")) {
		if f := strings.Fields(l); len(f) == 3 && f[2] == "ii" {
			installed[f[0]] = f[1]
		}
	}
	for _, d := range debs {
		if installed[d.Name] != d.Version {
			t.Errorf("%s: downloaded %s, installed %q", d.Name, d.Version, installed[d.Name])
		}
	}

	if out := m.Run(t, "restic version"); !strings.HasPrefix(out, "restic 0.14") {
		t.Errorf("restic version = %q, want 0.14", out)
	}
	if out, err := m.Exec("systemctl is-active postgresql@15-main"); strings.TrimSpace(out) != "active" {
		st, _ := m.Exec("systemctl status --no-pager postgresql@15-main; pg_lsclusters; journalctl --no-pager -n 50 -u postgresql@15-main")
		t.Fatalf("postgresql@15-main is %q (%v)\n%s", strings.TrimSpace(out), err, st)
	}
	// From a directory postgres may enter: psql warns about root's home.
	if out := m.Run(t, `cd / && su postgres -c "psql -tAc 'select 1'"`); strings.TrimSpace(out) != "1" {
		t.Errorf("psql select 1 = %q", out)
	}
}

func files(debs []testenv.Deb) []string {
	var fs []string
	for _, d := range debs {
		fs = append(fs, d.File)
	}
	return fs
}
