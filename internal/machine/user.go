package machine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// account is a line of /etc/passwd or /etc/group.
type account struct {
	name    string
	id      int
	gid     int
	home    string
	shell   string
	members []string
}

// parsePasswd and parseGroup read the account databases. Pure.
func parsePasswd(data []byte) map[string]account {
	out := map[string]account{}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Split(l, ":")
		if len(f) < 7 {
			continue
		}
		uid, _ := strconv.Atoi(f[2])
		gid, _ := strconv.Atoi(f[3])
		out[f[0]] = account{name: f[0], id: uid, gid: gid, home: f[5], shell: f[6]}
	}
	return out
}

func parseGroup(data []byte) map[string]account {
	out := map[string]account{}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Split(l, ":")
		if len(f) < 4 {
			continue
		}
		gid, _ := strconv.Atoi(f[2])
		var members []string
		if f[3] != "" {
			members = strings.Split(f[3], ",")
		}
		out[f[0]] = account{name: f[0], id: gid, members: members}
	}
	return out
}

// groupRes is a local group.
type groupRes struct {
	name   string
	gid    *int
	system bool
}

func (g *groupRes) key() string { return "group " + g.name }

func (g *groupRes) plan(ctx context.Context, sys *System) (*Change, error) {
	data, err := os.ReadFile(sys.Path("/etc/group"))
	if err != nil {
		return nil, err
	}
	have, ok := parseGroup(data)[g.name]
	if !ok {
		return &Change{Action: Create}, nil
	}
	if g.gid != nil && have.id != *g.gid {
		return &Change{Action: Update, Details: []string{fmt.Sprintf("gid %d → %d", have.id, *g.gid)}}, nil
	}
	return nil, nil
}

func (g *groupRes) apply(ctx context.Context, sys *System, c *Change) error {
	if c.Action == Update {
		_, err := sys.run(ctx, "groupmod", "-g", strconv.Itoa(*g.gid), g.name)
		return err
	}
	args := []string{}
	if g.gid != nil {
		args = append(args, "-g", strconv.Itoa(*g.gid))
	}
	if g.system {
		args = append(args, "-r")
	}
	_, err := sys.run(ctx, "groupadd", append(args, g.name)...)
	return err
}

// userRes is a local user and its authorized_keys.
type userRes struct {
	name           string
	uid            *int
	groups         []string
	shell, home    string
	system         bool
	authorizedKeys []string
	manageKeys     bool
	absent         bool
}

func (u *userRes) key() string { return "user " + u.name }

func (u *userRes) defaults() (shell, home string) {
	shell, home = u.shell, u.home
	if shell == "" {
		shell = "/bin/bash"
		if u.system {
			shell = "/usr/sbin/nologin"
		}
	}
	if home == "" {
		home = "/home/" + u.name
	}
	return shell, home
}

func (u *userRes) keysFile() []byte {
	return []byte(strings.Join(u.authorizedKeys, "\n") + "\n")
}

func (u *userRes) plan(ctx context.Context, sys *System) (*Change, error) {
	pw, err := os.ReadFile(sys.Path("/etc/passwd"))
	if err != nil {
		return nil, err
	}
	gr, err := os.ReadFile(sys.Path("/etc/group"))
	if err != nil {
		return nil, err
	}
	have, ok := parsePasswd(pw)[u.name]
	if u.absent {
		if ok {
			return &Change{Action: Delete}, nil
		}
		return nil, nil
	}
	shell, home := u.defaults()
	if !ok {
		d := []string{"shell " + shell + ", home " + home}
		if len(u.groups) > 0 {
			d = append(d, "groups "+strings.Join(u.groups, ","))
		}
		return &Change{Action: Create, Details: d}, nil
	}
	var det []string
	if u.uid != nil && have.id != *u.uid {
		det = append(det, fmt.Sprintf("uid %d → %d", have.id, *u.uid))
	}
	if have.shell != shell {
		det = append(det, "shell "+have.shell+" → "+shell)
	}
	if have.home != home {
		det = append(det, "home "+have.home+" → "+home)
	}
	groups := parseGroup(gr)
	var missing []string
	for _, g := range u.groups {
		if !slices.Contains(groups[g].members, u.name) && groups[g].id != have.gid {
			missing = append(missing, g)
		}
	}
	if len(missing) > 0 {
		det = append(det, "add to groups "+strings.Join(missing, ","))
	}
	if u.manageKeys {
		keys, _ := os.ReadFile(sys.Path(filepath.Join(home, ".ssh/authorized_keys")))
		if string(keys) != string(u.keysFile()) {
			det = append(det, "authorized_keys differ")
		}
	}
	if len(det) == 0 {
		return nil, nil
	}
	return &Change{Action: Update, Details: det}, nil
}

func (u *userRes) apply(ctx context.Context, sys *System, c *Change) error {
	if u.absent {
		_, err := sys.run(ctx, "userdel", u.name)
		return err
	}
	shell, home := u.defaults()
	groups := append([]string(nil), u.groups...)
	sort.Strings(groups)
	if c.Action == Create {
		args := []string{"-m", "-d", home, "-s", shell}
		if u.uid != nil {
			args = append(args, "-u", strconv.Itoa(*u.uid))
		}
		if u.system {
			args = append(args, "-r")
		}
		if len(groups) > 0 {
			args = append(args, "-G", strings.Join(groups, ","))
		}
		// A group of the user's own name becomes its primary group;
		// useradd would otherwise refuse to create the user.
		gr, _ := os.ReadFile(sys.Path("/etc/group"))
		if _, ok := parseGroup(gr)[u.name]; ok {
			args = append(args, "-g", u.name)
		}
		if _, err := sys.run(ctx, "useradd", append(args, u.name)...); err != nil {
			return withHint(err, "groups must exist first: list them under state.groups")
		}
	} else {
		args := []string{"-d", home, "-s", shell}
		if u.uid != nil {
			args = append(args, "-u", strconv.Itoa(*u.uid))
		}
		if len(groups) > 0 {
			args = append(args, "-a", "-G", strings.Join(groups, ","))
		}
		if _, err := sys.run(ctx, "usermod", append(args, u.name)...); err != nil {
			return err
		}
	}
	if !u.manageKeys {
		return nil
	}
	pw, _ := os.ReadFile(sys.Path("/etc/passwd"))
	acc := parsePasswd(pw)[u.name]
	sshDir := sys.Path(filepath.Join(home, ".ssh"))
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		return err
	}
	if err := os.Chown(sshDir, acc.id, acc.gid); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(sshDir, "authorized_keys"), u.keysFile(), 0o600, acc.id, acc.gid)
}
