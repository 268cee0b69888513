package testenv

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

//go:embed build-machine-image.sh
var buildMachineImage string

// MachineImage returns the Debian image test machines boot, building it
// into ~/.cache/tend/machines once (about 40 s; needs debootstrap, which
// the README's test command installs).
func MachineImage(t testing.TB) string {
	t.Helper()
	home, _ := os.UserHomeDir()
	dir := filepath.Join(home, ".cache", "tend", "machines")
	img := filepath.Join(dir, "bookworm")
	if _, err := os.Stat(filepath.Join(img, "usr/lib/systemd/systemd")); err == nil {
		return img
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Packages building in parallel share the cache: one builds, the others wait.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(img, "usr/lib/systemd/systemd")); err == nil {
		return img
	}
	for _, tool := range []string{"debootstrap", "systemd-nspawn"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("test machines need %s (apt-get install debootstrap systemd-container; the README's test command does): %v", tool, err)
		}
	}
	t.Logf("building the test machine image into %s (once)", img)
	cmd := exec.Command("bash", "-c", buildMachineImage, "build-machine-image", img)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the test machine image: %v\n%s", err, out)
	}
	return img
}

// Machines is a set of test machines on one bridge: each a network
// namespace and a systemd-nspawn container booting real systemd and sshd on
// a private overlay of the shared image.
type Machines struct {
	// Gateway is the host's address on the bridge; servers the machines
	// reach (git, apt) listen on it.
	Gateway string
	// ClientKey is the private key file root's authorized_keys accepts.
	ClientKey string
	Signer    ssh.Signer
	List      []*Machine

	bridge, image, dir string
}

// Machine is one test machine.
type Machine struct {
	Name string
	IP   string
	// HostKey is the machine's own ed25519 host key, in authorized_keys form.
	HostKey string

	set   *Machines
	netns string
	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	boots int
}

// Addr is the machine's SSH address.
func (m *Machine) Addr() string { return m.IP + ":22" }

// NewMachines starts n machines and waits until each answers SSH with its
// own host key. They are stopped when the test ends.
func NewMachines(t testing.TB, n int) *Machines {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("test machines need root (network namespaces and systemd-nspawn)")
	}
	img := MachineImage(t)
	ms := &Machines{image: img, dir: t.TempDir()}
	priv, _ := keyPair(t, filepath.Join(ms.dir, "client_key"))
	ms.ClientKey = filepath.Join(ms.dir, "client_key")
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	ms.Signer = signer
	if err := os.WriteFile(filepath.Join(ms.dir, "authorized_keys"), ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	// A subnet of our own per test: packages run side by side.
	var subnet int
	for range 50 {
		subnet = 100 + rand.IntN(150)
		ms.bridge = fmt.Sprintf("tendbr%d", subnet)
		if err := ipCmd("link", "add", ms.bridge, "type", "bridge"); err == nil {
			break
		}
		ms.bridge = ""
	}
	if ms.bridge == "" {
		t.Fatal("no free bridge name for the test machines")
	}
	t.Cleanup(func() { ipCmd("link", "del", ms.bridge) })
	ms.Gateway = fmt.Sprintf("10.213.%d.1", subnet)
	if err := ipCmd("addr", "add", ms.Gateway+"/24", "dev", ms.bridge); err != nil {
		t.Fatal(err)
	}
	if err := ipCmd("link", "set", ms.bridge, "up"); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m := &Machine{Name: fmt.Sprintf("m%d", i+1), IP: fmt.Sprintf("10.213.%d.%d", subnet, 11+i), set: ms}
		m.netns = fmt.Sprintf("tend%d-%s", subnet, m.Name)
		if err := ms.addNet(m, subnet, i); err != nil {
			t.Fatalf("machine %s network: %v", m.Name, err)
		}
		t.Cleanup(func() { ipCmd("netns", "del", m.netns); ipCmd("link", "del", "v"+m.netns) })
		_, pub := keyPair(t, filepath.Join(ms.dir, m.Name+"_host_key"))
		if err := os.WriteFile(filepath.Join(ms.dir, m.Name+"_host_key.pub"), ssh.MarshalAuthorizedKey(pub), 0o644); err != nil {
			t.Fatal(err)
		}
		m.HostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
		ms.List = append(ms.List, m)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range ms.List {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.Start()
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, m := range ms.List {
			m.Kill()
			m.unmountRoot()
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("machine %s did not start: %v\nconsole:\n%s", ms.List[i].Name, err, ms.List[i].Console())
		}
	}
	return ms
}

func (ms *Machines) addNet(m *Machine, subnet, i int) error {
	veth := "v" + m.netns
	if len(veth) > 15 {
		return fmt.Errorf("interface name %s too long", veth)
	}
	steps := [][]string{
		{"netns", "add", m.netns},
		// A fixed MAC per address: re-created machines don't stall on stale ARP.
		{"link", "add", veth, "type", "veth", "peer", "name", "host0", "address", fmt.Sprintf("02:42:0a:d5:%02x:%02x", subnet, 11+i), "netns", m.netns},
		{"link", "set", veth, "master", ms.bridge, "up"},
		{"-n", m.netns, "link", "set", "lo", "up"},
		{"-n", m.netns, "addr", "add", m.IP + "/24", "dev", "host0"},
		{"-n", m.netns, "link", "set", "host0", "up"},
		{"-n", m.netns, "route", "add", "default", "via", ms.Gateway},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return err
		}
	}
	return nil
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// rebootExit is systemd-nspawn's exit status when the container reboots;
// systemd-nspawn@.service restarts on it, and so does Machine.
const rebootExit = 133

// Start boots the machine (again) and waits for SSH. Its root is an
// overlay of the shared image with an upper layer of its own on disk, so
// what the machine writes survives a reboot, as on a real disk.
func (m *Machine) Start() error {
	if err := m.mountRoot(); err != nil {
		return err
	}
	done, err := m.boot()
	if err != nil {
		return err
	}
	return m.waitSSH(done, 60*time.Second)
}

// mountRoot mounts the machine's overlay root once.
func (m *Machine) mountRoot() error {
	base := filepath.Join(m.set.dir, m.Name)
	root := filepath.Join(base, "root")
	if _, err := os.Stat(filepath.Join(root, "usr")); err == nil {
		return nil
	}
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", m.set.image, filepath.Join(base, "upper"), filepath.Join(base, "work"))
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", opts, root).CombinedOutput(); err != nil {
		return fmt.Errorf("mount the machine's overlay root: %v: %s", err, bytes.TrimSpace(out))
	}
	// Names resolve at once: the machine's own name from /etc/hosts, and
	// any other name fails fast against a resolver that is not there
	// (the host's would not answer inside the namespace, and every lookup,
	// hostname -f in a package's script included, would wait 10 s).
	if err := os.WriteFile(filepath.Join(root, "etc/hosts"), []byte("127.0.0.1 localhost\n127.0.1.1 "+m.Name+"\n"), 0o644); err != nil {
		return err
	}
	os.Remove(filepath.Join(root, "etc/resolv.conf"))
	return os.WriteFile(filepath.Join(root, "etc/resolv.conf"), []byte("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"), 0o644)
}

func (m *Machine) unmountRoot() {
	exec.Command("umount", "-l", filepath.Join(m.set.dir, m.Name, "root")).Run()
}

// boot starts systemd-nspawn; when the machine reboots (exit 133) it is
// started again, as systemd-nspawn@.service does.
func (m *Machine) boot() (chan struct{}, error) {
	ms := m.set
	key := filepath.Join(ms.dir, m.Name+"_host_key")
	console, err := os.OpenFile(filepath.Join(ms.dir, m.Name+".console"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("systemd-nspawn", "-D", filepath.Join(ms.dir, m.Name, "root"), "--register=no", "--keep-unit",
		"--console=passive", "--resolv-conf=off", "--network-namespace-path=/run/netns/"+m.netns, "--machine="+m.netns, "--hostname="+m.Name,
		"--capability=CAP_NET_ADMIN",
		// The machine shares the host's kernel: let it see which modules
		// that kernel has, as it would on a VM (nspawn hides /sys/module).
		"--bind-ro=/sys/module:/sys/module",
		"--bind-ro="+key+":/etc/ssh/ssh_host_ed25519_key", "--bind-ro="+key+".pub:/etc/ssh/ssh_host_ed25519_key.pub",
		"--bind-ro="+filepath.Join(ms.dir, "authorized_keys")+":/root/.ssh/authorized_keys", "-b")
	cmd.Stdout, cmd.Stderr = console, console
	// Only /proc/sys/net becomes writable: the namespace is the machine's own.
	cmd.Env = append(os.Environ(), "SYSTEMD_NSPAWN_API_VFS_WRITABLE=network")
	if err := cmd.Start(); err != nil {
		console.Close()
		return nil, fmt.Errorf("systemd-nspawn: %w", err)
	}
	done := make(chan struct{})
	m.mu.Lock()
	m.cmd, m.done = cmd, done
	m.boots++
	m.mu.Unlock()
	go func() {
		cmd.Wait()
		console.Close()
		m.mu.Lock()
		again := m.cmd == cmd && cmd.ProcessState.ExitCode() == rebootExit
		m.mu.Unlock()
		if again {
			if _, err := m.boot(); err == nil {
				// The new boot's done channel takes over; this one closes
				// only once the machine is stopped for good.
				m.mu.Lock()
				next := m.done
				m.mu.Unlock()
				<-next
			}
		}
		close(done)
	}()
	return done, nil
}

func (m *Machine) waitSSH(done chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("systemd-nspawn exited")
		default:
		}
		c, err := m.Dial()
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no SSH on %s after %s", m.Addr(), timeout)
}

// Boots is how many times the machine has booted, reboots included.
func (m *Machine) Boots() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.boots
}

// Kill powers the machine off (SIGTERM to nspawn, then SIGKILL after 5 s),
// as pulling the plug would; it is not restarted.
func (m *Machine) Kill() {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM) // a clean poweroff first
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// Console returns what the machine printed while booting.
func (m *Machine) Console() string {
	b, _ := os.ReadFile(filepath.Join(m.set.dir, m.Name+".console"))
	return string(b)
}

// Dial opens an SSH connection as root, verifying the host key.
func (m *Machine) Dial() (*ssh.Client, error) {
	hk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(m.HostKey))
	if err != nil {
		return nil, err
	}
	return ssh.Dial("tcp", m.Addr(), &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(m.set.Signer)},
		HostKeyCallback: ssh.FixedHostKey(hk), Timeout: 2 * time.Second})
}

// Run runs a shell command on the machine and returns its output; it fails
// the test when the command fails.
func (m *Machine) Run(t testing.TB, command string) string {
	t.Helper()
	out, err := m.Exec(command)
	if err != nil {
		t.Fatalf("%s: %s: %v\n%s", m.Name, command, err, out)
	}
	return out
}

// Exec runs a shell command on the machine.
func (m *Machine) Exec(command string) (string, error) {
	c, err := m.Dial()
	if err != nil {
		return "", err
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	out, err := s.CombinedOutput(command)
	return string(out), err
}

// Serve serves h on the bridge address, reachable from the machines, until
// the test ends; it returns the base URL.
func (ms *Machines) Serve(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", ms.Gateway+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx) //nolint:errcheck
	})
	return "http://" + ln.Addr().String()
}
