package fleet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tend.dev/tend/internal/model"
)

func TestAgentBinary(t *testing.T) {
	elf := "\x7fELF rest"
	tests := []struct {
		name      string
		files     map[string]string // in one directory; "tend" is the running tend
		path      string
		wantFrom  string
		wantWarn  string
		wantError string
	}{
		{name: "tend-node beside tend", files: map[string]string{"tend": elf + "full", "tend-node": elf + "node"}, wantFrom: "tend-node"},
		{name: "explicit path wins", files: map[string]string{"tend": elf, "tend-node": elf, "other": elf + "other"}, path: "other", wantFrom: "other"},
		{name: "falls back to tend with a warning", files: map[string]string{"tend": elf}, wantFrom: "tend", wantWarn: "go build -o"},
		{name: "missing explicit path", files: map[string]string{"tend": elf}, path: "nope", wantError: "read the agent binary"},
		{name: "not an executable", files: map[string]string{"tend": elf, "script": "#!/bin/sh\n"}, path: "script", wantError: "is not a Linux executable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for f, c := range tc.files {
				os.WriteFile(filepath.Join(dir, f), []byte(c), 0o755)
			}
			path := ""
			if tc.path != "" {
				path = filepath.Join(dir, tc.path)
			}
			b, from, warn, err := AgentBinary(path, filepath.Join(dir, "tend"))
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) || model.HintOf(err) == "" {
					t.Fatalf("err = %v (hint %q), want %q with a hint", err, model.HintOf(err), tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Base(from) != tc.wantFrom || string(b) != tc.files[tc.wantFrom] {
				t.Errorf("from %s (%q), want %s", from, b, tc.wantFrom)
			}
			if (tc.wantWarn == "") != (warn == "") || !strings.Contains(warn, tc.wantWarn) {
				t.Errorf("warn = %q, want %q", warn, tc.wantWarn)
			}
		})
	}
}
