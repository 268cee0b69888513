package cli

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"filippo.io/age"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	sigsyaml "sigs.k8s.io/yaml"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/secret"
)

func newSecret(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "secret", Short: "Encrypted secrets in the ops repository: SOPS files with age keys"}
	var out string
	keygen := &cobra.Command{
		Use:   "keygen",
		Short: "Create an age identity, store it in a 0600 file and print its recipient",
		Example: `  tend secret keygen --out ~/.config/tend/age.agekey
  tend secret keygen | kubectl -n tend-system create secret generic sops-age --from-file=age.agekey=/dev/stdin`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			id, err := age.GenerateX25519Identity()
			if err != nil {
				return err
			}
			text := fmt.Sprintf("# created by tend secret keygen\n# public key: %s\n%s\n", id.Recipient(), id)
			if out == "" {
				if f, ok := g.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
					// Never print a private key on a terminal: store it.
					dir, err := os.UserConfigDir()
					if err != nil {
						return err
					}
					out = filepath.Join(dir, "tend", "age.agekey")
				} else {
					fmt.Fprint(g.stdout, text)
					fmt.Fprintf(g.stderr, "public key: %s\n", id.Recipient())
					return nil
				}
			}
			if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
				return err
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return model.WithHint(fmt.Errorf("write identity: %w", err), "tend never overwrites an identity; choose another --out")
			}
			if _, err := f.WriteString(text); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "identity written to %s (mode 0600); add the recipient to .sops.yaml:\n", out)
			fmt.Fprintln(g.stdout, id.Recipient())
			return nil
		},
	}
	keygen.Flags().StringVar(&out, "out", "", "file to store the identity in (mode 0600; default: ~/.config/tend/age.agekey on a terminal, stdout otherwise)")

	encrypt := &cobra.Command{
		Use:   "encrypt FILE",
		Short: "Encrypt a file in place for the recipients its .sops.yaml creation rule names (data/stringData only for Secrets)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			file := args[0]
			plain, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			if secret.IsEncrypted(plain) {
				return model.WithHint(fmt.Errorf("%s is already encrypted", file), "use tend secret edit, set or rotate")
			}
			return g.encryptTo(file, plain, "encrypted")
		},
	}
	decrypt := &cobra.Command{
		Use:   "decrypt FILE",
		Short: "Print the decrypted file to stdout (never to disk)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			plain, err := g.decryptFile(cmd, args[0])
			if err != nil {
				return err
			}
			_, err = g.stdout.Write(plain)
			return err
		},
	}
	edit := &cobra.Command{
		Use:   "edit FILE",
		Short: "Decrypt to a private temporary file, open $EDITOR, re-encrypt, shred the temporary file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			file := args[0]
			plain, err := g.decryptFile(cmd, file)
			if err != nil {
				return err
			}
			dir, err := os.MkdirTemp(tmpBase(), "tend-edit-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			tmp := filepath.Join(dir, filepath.Base(file))
			if err := os.WriteFile(tmp, plain, 0o600); err != nil {
				return err
			}
			defer shred(tmp)
			editor := os.Getenv("EDITOR")
			if editor == "" {
				editor = "vi"
			}
			c := exec.Command("sh", "-c", editor+` "$1"`, "editor", tmp)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, g.stderr, g.stderr
			if err := c.Run(); err != nil {
				return model.WithHint(fmt.Errorf("editor %q: %w", editor, err), "the encrypted file is unchanged")
			}
			edited, err := os.ReadFile(tmp)
			if err != nil {
				return err
			}
			if bytes.Equal(edited, plain) {
				fmt.Fprintf(g.stderr, "%s unchanged\n", file)
				return nil
			}
			return g.reencryptWith(file, edited)
		},
	}
	var fromFile string
	set := &cobra.Command{
		Use:     "set FILE KEY",
		Short:   "Set a value (from stdin or --from-file, never argv); KEY is a dotted path, or a stringData key for Secrets",
		Example: `  printf %s "$PASSWORD" | tend secret set secrets/db.yaml password`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			file, key := args[0], args[1]
			var value []byte
			var err error
			if fromFile != "" {
				value, err = os.ReadFile(fromFile)
			} else {
				value, err = io.ReadAll(cmd.InOrStdin())
			}
			if err != nil {
				return err
			}
			plain, err := g.decryptFile(cmd, file)
			if err != nil {
				return err
			}
			var obj map[string]any
			if err := sigsyaml.Unmarshal(plain, &obj); err != nil {
				return err
			}
			setPath(obj, keyPath(obj, key), strings.TrimSuffix(string(value), "\n"))
			out, err := sigsyaml.Marshal(obj)
			if err != nil {
				return err
			}
			return g.reencryptWith(file, out)
		},
	}
	set.Flags().StringVar(&fromFile, "from-file", "", "read the value from this file")
	get := &cobra.Command{
		Use:   "get FILE KEY",
		Short: "Print one decrypted value",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			plain, err := g.decryptFile(cmd, args[0])
			if err != nil {
				return err
			}
			var obj map[string]any
			if err := sigsyaml.Unmarshal(plain, &obj); err != nil {
				return err
			}
			v, ok := getPath(obj, keyPath(obj, args[1]))
			if !ok {
				return model.WithHint(fmt.Errorf("%s has no key %s", args[0], args[1]), "keys are dotted paths, e.g. stringData.password")
			}
			fmt.Fprintln(g.stdout, v)
			return nil
		},
	}
	var force bool
	var dir string
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Re-encrypt every SOPS file whose recipients differ from its .sops.yaml rule, with a new data key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ids, err := g.identities(cmd.Context(), nil)
			if err != nil {
				return err
			}
			files, err := secret.RepoFiles(dir)
			if err != nil {
				return err
			}
			changed := 0
			for _, f := range files {
				p := filepath.Join(dir, f)
				data, err := os.ReadFile(p)
				if err != nil || !secret.IsEncrypted(data) {
					continue
				}
				rule, err := secret.RuleFor(p)
				if err != nil {
					return err
				}
				out, did, err := secret.Reencrypt(f, data, ids, rule, force)
				if err != nil {
					return err
				}
				if !did {
					fmt.Fprintf(g.stdout, "  %s: recipients match, untouched\n", f)
					continue
				}
				if err := writeAtomic(p, out); err != nil {
					return err
				}
				changed++
				fmt.Fprintf(g.stdout, "✓ %s: re-encrypted with a new data key\n", f)
			}
			fmt.Fprintf(g.stdout, "%d files re-encrypted\n", changed)
			return nil
		},
	}
	rotate.Flags().BoolVar(&force, "force", false, "re-encrypt every file with a new data key, even when its recipients match")
	rotate.Flags().StringVar(&dir, "dir", ".", "repository root")
	check := &cobra.Command{
		Use:   "check [FILE...]",
		Short: "Fail when a Kubernetes Secret is committed unencrypted (the pre-commit hook runs it on staged files)",
		RunE: func(_ *cobra.Command, args []string) error {
			probs := secret.PlainSecrets(".", args)
			if len(probs) == 0 {
				return nil
			}
			for _, p := range probs {
				p.Warning = false
			}
			return probs
		},
	}
	hook := &cobra.Command{
		Use:   "install-hook",
		Short: "Install a git pre-commit hook that refuses unencrypted Secrets",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			gitDir, err := exec.Command("git", "rev-parse", "--git-path", "hooks").Output()
			if err != nil {
				return model.WithHint(fmt.Errorf("find the git hooks directory: %w", err), "run it inside a git work tree")
			}
			hooks := strings.TrimSpace(string(gitDir))
			if err := os.MkdirAll(hooks, 0o755); err != nil {
				return err
			}
			file := filepath.Join(hooks, "pre-commit")
			if old, err := os.ReadFile(file); err == nil && !strings.Contains(string(old), "tend secret check") {
				return model.WithHint(fmt.Errorf("%s exists", file), "add this line to it: git diff --cached --name-only --diff-filter=ACM -z | xargs -0 tend secret check")
			}
			script := "#!/bin/sh\n# installed by tend secret install-hook: refuses unencrypted Kubernetes Secrets\ngit diff --cached --name-only --diff-filter=ACM -z | xargs -0 tend secret check\n"
			if err := os.WriteFile(file, []byte(script), 0o755); err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "installed %s\n", file)
			return nil
		},
	}
	cmd.AddCommand(keygen, encrypt, decrypt, edit, set, get, rotate, check, hook)
	return cmd
}

func (g *globals) decryptFile(cmd *cobra.Command, file string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if !secret.IsEncrypted(data) {
		return nil, model.WithHint(fmt.Errorf("%s is not SOPS-encrypted", file), "encrypt it with tend secret encrypt")
	}
	ids, err := g.identities(cmd.Context(), nil)
	if err != nil {
		return nil, err
	}
	return secret.Decrypt(file, data, ids)
}

// reencryptWith encrypts new plaintext for the recipients of the file's
// creation rule, and replaces the file atomically.
func (g *globals) reencryptWith(file string, plain []byte) error {
	return g.encryptTo(file, plain, "re-encrypted")
}

func (g *globals) encryptTo(file string, plain []byte, verb string) error {
	rule, err := secret.RuleFor(file)
	if err != nil {
		return err
	}
	enc, err := secret.Encrypt(file, plain, rule)
	if err != nil {
		return err
	}
	if err := writeAtomic(file, enc); err != nil {
		return err
	}
	fmt.Fprintf(g.stderr, "%s %s\n", verb, file)
	return nil
}

// keyPath resolves KEY: a dotted path, or for a Secret a bare key in stringData.
func keyPath(obj map[string]any, key string) []string {
	if strings.Contains(key, ".") {
		return strings.Split(key, ".")
	}
	if obj["kind"] == "Secret" {
		if d, ok := obj["data"].(map[string]any); ok {
			if _, ok := d[key]; ok {
				return []string{"data", key}
			}
		}
		return []string{"stringData", key}
	}
	return []string{key}
}

func setPath(obj map[string]any, path []string, v string) {
	m := obj
	for _, p := range path[:len(path)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	if path[0] == "data" && len(path) == 2 {
		// data values are base64.
		v = b64(v)
	}
	m[path[len(path)-1]] = v
}

func getPath(obj map[string]any, path []string) (string, bool) {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		cur, ok = m[p]
		if !ok {
			return "", false
		}
	}
	s := fmt.Sprint(cur)
	if path[0] == "data" && len(path) == 2 {
		if d, err := unb64(s); err == nil {
			return d, true
		}
	}
	return s, true
}

// writeAtomic replaces file with data through a temporary file and rename,
// so a crash or a full disk leaves the old file.
func writeAtomic(file string, data []byte) error {
	st, err := os.Stat(file)
	mode := os.FileMode(0o644)
	if err == nil {
		mode = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".tend-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// tmpBase prefers a memory-backed directory for decrypted temporary files.
func tmpBase() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return ""
}

// shred overwrites a file with zeros before removing it.
func shred(file string) {
	if st, err := os.Stat(file); err == nil {
		if f, err := os.OpenFile(file, os.O_WRONLY, 0); err == nil {
			_, _ = f.Write(make([]byte, st.Size()))
			_ = f.Sync()
			f.Close()
		}
	}
	os.Remove(file)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func unb64(s string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	return string(b), err
}
