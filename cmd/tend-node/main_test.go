package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tend.dev/tend/internal/node"
)

func tendNode(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestMachineBuild(t *testing.T) {
	dir := t.TempDir()
	st := node.Status{Machine: "web-1", Pool: "web", Revision: "main@sha1:0123456789ab", Time: time.Now().UTC(),
		RebootRequired: true, Resources: 12, Version: "1.2.3"}
	b, _ := json.Marshal(st)
	os.WriteFile(filepath.Join(dir, "status.json"), b, 0o600)

	tests := []struct {
		name     string
		args     []string
		code     int
		out, err string
	}{
		{name: "status, text", args: []string{"node", "status", "--state-dir", dir}, code: 1,
			out: "machine web-1 (pool web): NOT in sync at main@sha1:0123456789ab"},
		{name: "status says a reboot is owed", args: []string{"node", "status", "--state-dir", dir}, code: 1,
			out: "a reboot is required for a change to take effect"},
		{name: "status, json", args: []string{"node", "status", "--state-dir", dir, "-o", "json"}, code: 1,
			out: `"rebootRequired": true`},
		{name: "no status yet", args: []string{"node", "status", "--state-dir", t.TempDir()}, code: 2, err: "hint:"},
		{name: "a command of the full tend", args: []string{"apply", "--repo", "."}, code: 2,
			err: "hint: this is the machine build of tend, which has only `tend node`"},
		{name: "missing config", args: []string{"node", "plan", "--config", filepath.Join(dir, "nope.yaml")}, code: 2, err: "nope.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := tendNode(tc.args...)
			if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errOut, tc.err) {
				t.Fatalf("tend %s = %d\nstdout:\n%s\nstderr:\n%s\nwant %d, %q, %q", strings.Join(tc.args, " "), code, out, errOut, tc.code, tc.out, tc.err)
			}
		})
	}
}
