package machine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"tend.dev/tend/internal/model"
)

func TestCheckSSHAccess(t *testing.T) {
	for _, tc := range []struct {
		name, ruleset string
		port          int
		ok            bool
	}{
		{"accept policy", "table inet f {\n chain input {\n  type filter hook input priority 0; policy accept;\n }\n}", 22, true},
		{"drop with ssh", "table inet f {\n chain input {\n  type filter hook input priority 0; policy drop;\n  tcp dport 22 accept\n }\n}", 22, true},
		{"drop with a set", "table inet f {\n chain input {\n  type filter hook input priority 0; policy drop;\n  tcp dport { 80, 22, 443 } accept\n }\n}", 22, true},
		{"drop with a range", "table inet f {\n chain input {\n  type filter hook input priority 0; policy drop;\n  tcp dport 20-30 accept\n }\n}", 22, true},
		{"drop by name", "table inet f {\n chain input {\n  type filter hook input priority 0; policy drop;\n  tcp dport ssh accept\n }\n}", 22, true},
		{"drop without ssh", "table inet f {\n chain input {\n  type filter hook input priority 0; policy drop;\n  tcp dport 80 accept\n }\n}", 22, false},
		{"other port", "table inet f {\n chain input {\n  type filter hook input priority 0; policy drop;\n  tcp dport 22 accept\n }\n}", 2222, false},
		{"established only", "table inet f {\n chain input {\n  type filter hook input priority 0; policy drop;\n  ct state established accept\n }\n}", 22, false},
		{"bare drop before ssh", "table inet f {\n chain input {\n  type filter hook input priority 0;\n  drop\n  tcp dport 22 accept\n }\n}", 22, false},
		{"commented accept", "table inet f {\n chain input {\n  type filter hook input priority 0; policy drop;\n  # tcp dport 22 accept\n }\n}", 22, false},
		{"output chain drop is fine", "table inet f {\n chain output {\n  type filter hook output priority 0; policy drop;\n }\n}", 22, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckSSHAccess(tc.ruleset, tc.port)
			if (err == nil) != tc.ok {
				t.Fatalf("CheckSSHAccess = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestParsers(t *testing.T) {
	status := "Package: a\nStatus: install ok installed\nVersion: 1.0\n\nPackage: b\nStatus: deinstall ok config-files\nVersion: 2\n\nPackage: c\nStatus: install ok half-configured\nVersion: 3\n"
	if diff := cmp.Diff(map[string]string{"a": "1.0"}, parseDpkgStatus([]byte(status))); diff != "" {
		t.Error(diff)
	}
	fstab := "UUID=x / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n# /old none swap sw 0 0\n"
	if got := string(swapFstab([]byte(fstab))); got != "UUID=x / ext4 defaults 0 1\n# swap off by tend: /swapfile none swap sw 0 0\n# /old none swap sw 0 0\n" {
		t.Errorf("swapFstab = %q", got)
	}
	if swapFstab([]byte("UUID=x / ext4 defaults 0 1\n")) != nil {
		t.Error("no swap, yet fstab changes")
	}
	if got := activeSwaps([]byte("Filename Type Size Used Priority\n/swapfile file 1024 0 -2\n")); !cmp.Equal(got, []string{"/swapfile"}) {
		t.Errorf("activeSwaps = %v", got)
	}
	if !sameSysctl("4096\t87380\t6291456\n", "4096 87380 6291456") {
		t.Error("sysctl values differ only in spacing")
	}
	if got := string(sysctlConf(map[string]string{"b": "2", "a": "1"})); !strings.HasSuffix(got, "a = 1\nb = 2\n") {
		t.Errorf("sysctlConf = %q", got)
	}
	st := parseShow([]byte("LoadState=loaded\nActiveState=failed\nUnitFileState=enabled\n"))
	if st != (unitState{load: "loaded", active: "failed", fileState: "enabled"}) {
		t.Errorf("parseShow = %+v", st)
	}
}

// testRoot is a temporary machine root with root in /etc/passwd and
// /etc/group, enough for owners to resolve.
func testRoot(t *testing.T) (string, *System) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\n"), 0o644)
	return root, &System{Root: root}
}

// TestFilesOnARoot plans and applies file, directory and symlink resources
// under a temporary root: the resources that need no machine.
func TestFilesOnARoot(t *testing.T) {
	root, sys := testRoot(t)
	content := "hello\n"
	pool := &model.MachinePool{Metadata: model.ObjectMeta{Name: "p"}, Origin: model.Origin{File: "machines/p.yaml"}, Spec: model.MachinePoolSpec{
		Machines: []model.Machine{{Name: "m"}},
		State: model.MachineState{
			Directories: []model.Directory{{Path: "/srv/app", Mode: "0750"}},
			Files:       []model.File{{Path: "/srv/app/a.conf", Content: &content, Mode: "0640"}},
			Symlinks:    []model.Symlink{{Path: "/srv/app/current", Target: "/srv/app/a.conf"}},
		}}}
	d, err := Compile(pool, &pool.Spec.Machines[0], Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p := PlanState(ctx, sys, d)
	var got []string
	for _, c := range p.Changes {
		got = append(got, c.String())
	}
	if diff := cmp.Diff([]string{"create directory /srv/app", "create file /srv/app/a.conf", "create symlink /srv/app/current"}, got); diff != "" {
		t.Fatal(diff)
	}
	for _, r := range Apply(ctx, sys, p, nil) {
		if r.Error != "" {
			t.Fatalf("%s: %s", r.Resource, r.Error)
		}
	}
	if p := PlanState(ctx, sys, d); len(p.Changes) != 0 {
		t.Fatalf("second plan is not empty: %+v", p.Changes)
	}
	// Drift: a hand edit and a mode change are put back.
	os.WriteFile(filepath.Join(root, "srv/app/a.conf"), []byte("edited\n"), 0o600)
	os.Chmod(filepath.Join(root, "srv/app/a.conf"), 0o600)
	p = PlanState(ctx, sys, d)
	if len(p.Changes) != 1 || !strings.Contains(strings.Join(p.Changes[0].Details, "\n"), "-edited") || !strings.Contains(strings.Join(p.Changes[0].Details, "\n"), "mode 0600 → 0640") {
		t.Fatalf("drift plan: %+v", p.Changes)
	}
	Apply(ctx, sys, p, nil)
	if b, _ := os.ReadFile(filepath.Join(root, "srv/app/a.conf")); string(b) != content {
		t.Fatalf("content = %q", b)
	}
	if all, pm := sys.Execs(); all != 0 || pm != 0 {
		t.Errorf("file resources started %d processes", all)
	}
}

func TestWriteAtomicKeepsOldFileWhenDiskIsFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a small tmpfs and needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=16k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	defer syscall.Unmount(dir, 0)
	f := filepath.Join(dir, "data")
	if err := writeAtomic(f, []byte("old\n"), 0o644, -1, -1); err != nil {
		t.Fatal(err)
	}
	err := writeAtomic(f, make([]byte, 64<<10), 0o644, -1, -1)
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("writeAtomic on a full disk = %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if b, _ := os.ReadFile(f); string(b) != "old\n" || len(entries) != 1 {
		t.Fatalf("old file not kept whole, or temp left: %q, %d entries", b, len(entries))
	}
}

func TestTemplateErrors(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "files"), 0o755)
	os.WriteFile(filepath.Join(root, "files/app.tmpl"), []byte("line one\nport={{ .Vars.port }}\n"), 0o644)
	bad := "a\nb {{ .Machine.Nope }}\n"
	unclosed := "{{ if .Vars.x }}\n"
	for _, tc := range []struct {
		name string
		file model.File
		want string
	}{
		{"inline, unknown field", model.File{Path: "/a", Content: &bad, Template: true, Line: 20}, "machines/p.yaml:21: MachinePool/p: file /a: template: "},
		{"inline, parse error", model.File{Path: "/b", Content: &unclosed, Template: true, Line: 30}, "machines/p.yaml:"},
		{"source, missing var", model.File{Path: "/c", Source: "files/app.tmpl", Template: true, Line: 40}, "files/app.tmpl:2: MachinePool/p: file /c: template: "},
		{"source missing", model.File{Path: "/d", Source: "files/none", Line: 50}, "machines/p.yaml:50: MachinePool/p: file /d: source files/none: no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := &model.MachinePool{Metadata: model.ObjectMeta{Name: "p"}, Origin: model.Origin{File: "machines/p.yaml"}, Spec: model.MachinePoolSpec{
				Machines: []model.Machine{{Name: "m"}}, State: model.MachineState{Files: []model.File{tc.file}}}}
			_, err := Compile(pool, &pool.Spec.Machines[0], Options{Root: root})
			if err == nil || !strings.Contains(err.Error(), tc.want) || model.HintOf(err) == "" {
				t.Fatalf("Compile = %v (hint %q), want %q", err, model.HintOf(err), tc.want)
			}
		})
	}
}

func TestHostname(t *testing.T) {
	var data TemplateData
	data.Machine.Name, data.Machine.Pool = "web-1", "web"
	data.Vars = map[string]string{"domain": "example.test"}
	tests := []struct {
		name, spec, want, err string
	}{
		{name: "plain", spec: "web-1", want: "web-1"},
		{name: "fqdn", spec: "Web-1.example.test", want: "Web-1.example.test"},
		{name: "template", spec: "{{ .Machine.Name }}.{{ .Vars.domain }}", want: "web-1.example.test"},
		{name: "missing var", spec: "{{ .Machine.Name }}.{{ .Vars.zone }}", err: `map has no entry for key "zone"`},
		{name: "bad template", spec: "{{ .Machine.Name ", err: "template: unclosed action"},
		{name: "underscore", spec: "web_1", err: `"web_1" is not a valid hostname`},
		{name: "empty label", spec: "web..test", err: "not a valid hostname"},
		{name: "leading dash", spec: "-web", err: "not a valid hostname"},
		{name: "too long", spec: strings.Repeat("a.", 127) + "a", err: "longer than 253"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := hostname(tc.spec, data)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("hostname(%q) = %q, %v; want error %q", tc.spec, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("hostname(%q) = %q, %v; want %q", tc.spec, got, err, tc.want)
			}
		})
	}
}

// TestPrune removes, over two runs on a temporary root, what left git:
// files and symlinks at once, their directory once empty; a directory with
// files tend did not write stays managed and untouched.
func TestPrune(t *testing.T) {
	root, sys := testRoot(t)
	ctx := context.Background()
	content := "hello\n"
	compile := func(st model.MachineState) *Desired {
		t.Helper()
		pool := &model.MachinePool{Metadata: model.ObjectMeta{Name: "p"}, Origin: model.Origin{File: "machines/p.yaml"},
			Spec: model.MachinePoolSpec{Machines: []model.Machine{{Name: "m"}}, State: st}}
		d, err := Compile(pool, &pool.Spec.Machines[0], Options{Root: root})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	run := func(d *Desired, previous []string) ([]string, []string) {
		t.Helper()
		d.Prune(previous)
		p := PlanState(ctx, sys, d)
		var got []string
		for _, c := range p.Changes {
			got = append(got, c.String())
		}
		res := Apply(ctx, sys, p, nil)
		for _, r := range res {
			if r.Error != "" {
				t.Fatalf("%s: %s", r.Resource, r.Error)
			}
		}
		return got, d.Managed(res)
	}
	full := model.MachineState{
		Directories: []model.Directory{{Path: "/srv/app"}, {Path: "/srv/data"}},
		Files:       []model.File{{Path: "/srv/app/a.conf", Content: &content}, {Path: "/etc/keep.conf", Content: &content}},
		Symlinks:    []model.Symlink{{Path: "/srv/app/current", Target: "/srv/app/a.conf"}},
	}
	_, managed := run(compile(full), nil)
	os.WriteFile(filepath.Join(root, "srv/data/users-file"), []byte("not tend's\n"), 0o644)

	small := model.MachineState{Files: []model.File{{Path: "/etc/keep.conf", Content: &content}}}
	got, managed := run(compile(small), managed)
	if diff := cmp.Diff([]string{"delete file /srv/app/a.conf", "delete symlink /srv/app/current"}, got); diff != "" {
		t.Fatalf("first run after the removal (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"file /etc/keep.conf", "directory /srv/data", "directory /srv/app"}, managed); diff != "" {
		t.Fatalf("still managed (-want +got):\n%s", diff)
	}
	got, managed = run(compile(small), managed)
	if diff := cmp.Diff([]string{"delete directory /srv/app"}, got); diff != "" {
		t.Fatalf("second run (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(root, "srv/app")); !os.IsNotExist(err) {
		t.Errorf("/srv/app is still there: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "srv/data/users-file")); err != nil || string(b) != "not tend's\n" {
		t.Errorf("a file tend did not write was touched: %q, %v", b, err)
	}
	got, _ = run(compile(small), managed)
	if len(got) != 0 {
		t.Errorf("third run changed %v", got)
	}
	// A path that came back under tend is managed again, not pruned.
	if got, _ := run(compile(full), managed); strings.Contains(strings.Join(got, ","), "delete") {
		t.Errorf("restored state deletes: %v", got)
	}
}
