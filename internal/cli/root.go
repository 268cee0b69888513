// Package cli is the tend command line: one file per command, flags bound to
// an options struct, and one mapping from errors to exit codes and hints
// (exit.go).
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/nodecli"
	"tend.dev/tend/internal/render"
	"tend.dev/tend/internal/secret"
	"tend.dev/tend/internal/source"
	_ "tend.dev/tend/internal/source/gogit" // git remotes
	"tend.dev/tend/internal/version"
)

// Version is tend's version, set at build time (see package version).
var Version = version.Version

// globals are the flags every command takes.
type globals struct {
	repo, cluster, kubeconfig, revision string
	output                              string
	logLevel                            string
	gitUsername, gitPasswordFile        string
	sshKey, knownHosts                  string
	ageIdentity                         string
	stdout, stderr                      io.Writer
}

func (g *globals) json() bool { return g.output == "json" }

// logger logs to stderr at --log-level, or at def when it is not given.
func (g *globals) logger(def slog.Level) *slog.Logger {
	lvl := def
	if g.logLevel != "" {
		_ = lvl.UnmarshalText([]byte(g.logLevel))
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: lvl}))
}

// sourceOptions reads credentials from files and the environment, never
// from argv, where every user of the machine could read them.
func (g *globals) sourceOptions() (source.Options, error) {
	o := source.Options{Ref: g.revision, Username: g.gitUsername, SSHKeyFile: g.sshKey, KnownHostsFile: g.knownHosts,
		Token: os.Getenv("TEND_GIT_TOKEN"), Password: os.Getenv("TEND_GIT_PASSWORD")}
	if o.Username == "" {
		o.Username = os.Getenv("TEND_GIT_USERNAME")
	}
	if g.gitPasswordFile != "" {
		b, err := os.ReadFile(g.gitPasswordFile)
		if err != nil {
			return o, model.WithHint(fmt.Errorf("read --git-password-file: %w", err), "the file holds the password or token on one line")
		}
		o.Password = strings.TrimSpace(string(b))
	}
	return o, nil
}

// identities gathers the age identities: --age-identity, TEND_AGE_KEY and,
// when a cluster client is given, the Secret tend-system/sops-age.
func (g *globals) identities(ctx context.Context, c *kube.Client) (*secret.Identities, error) {
	ids := &secret.Identities{}
	if g.ageIdentity != "" {
		warn, err := ids.LoadFile(g.ageIdentity)
		if warn != "" {
			fmt.Fprintf(g.stderr, "warning: %s\n", warn)
		}
		if err != nil {
			return nil, err
		}
	}
	if k := os.Getenv("TEND_AGE_KEY"); k != "" {
		if err := ids.Add("TEND_AGE_KEY", []byte(k)); err != nil {
			return nil, err
		}
	}
	if c != nil {
		s, err := c.Typed.CoreV1().Secrets(kube.Namespace).Get(ctx, AgeSecretName, metav1.GetOptions{})
		if err == nil {
			for k, v := range s.Data {
				if err := ids.Add("Secret "+kube.Namespace+"/"+AgeSecretName+" key "+k, v); err != nil {
					return nil, err
				}
			}
		}
	}
	return ids, nil
}

// AgeSecretName is the Secret in tend-system holding the agent's age identity.
const AgeSecretName = "sops-age"

func (g *globals) openSource() (source.Source, error) {
	if g.repo == "" {
		return nil, model.WithHint(fmt.Errorf("--repo is required"), "pass a directory or a git URL: --repo ./ops or --repo https://git.example.com/ops.git")
	}
	o, err := g.sourceOptions()
	if err != nil {
		return nil, err
	}
	return source.Open(g.repo, o)
}

func (g *globals) requireCluster() error {
	if g.cluster == "" {
		return model.WithHint(fmt.Errorf("--cluster is required"), "pass the metadata.name of a Cluster in the repository; `tend validate --repo DIR` lists them")
	}
	return nil
}

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// New returns the root command.
func New(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "tend",
		Short: "tend installs and maintains a platform from one git repository",
		Long: `tend keeps Kubernetes clusters equal to an ops repository in git: it renders
each Cluster's components, applies them with server-side apply, prunes what
left git, corrects drift and reports status.

Exit codes: 0 success; 1 the result is not clean (diff found changes,
status found components not Ready); 2 error (bad input, failed apply,
unreachable git or cluster).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.repo, "repo", "", "ops repository: a directory or a git URL (file://, https://, ssh://)")
	pf.StringVar(&g.cluster, "cluster", "", "metadata.name of the Cluster to act on")
	pf.StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, then in-cluster config)")
	pf.StringVar(&g.revision, "revision", "", "branch, tag, semver range or commit to follow (default: the remote's default branch)")
	pf.StringVarP(&g.output, "output", "o", "text", "output format: text or json")
	pf.StringVar(&g.logLevel, "log-level", "", "log level: debug, info, warn, error (default: info for run, warn otherwise)")
	pf.StringVar(&g.gitUsername, "git-username", "", "git username for https (or TEND_GIT_USERNAME); the password or token comes from TEND_GIT_PASSWORD, TEND_GIT_TOKEN or --git-password-file")
	pf.StringVar(&g.gitPasswordFile, "git-password-file", "", "file holding the git password or token")
	pf.StringVar(&g.sshKey, "ssh-key", "", "private key for ssh:// remotes")
	pf.StringVar(&g.knownHosts, "known-hosts", "", "known_hosts file pinning the ssh remote's host key")
	pf.StringVar(&g.ageIdentity, "age-identity", "", "age identity file for SOPS-encrypted files (also TEND_AGE_KEY, and the Secret tend-system/sops-age in the cluster)")
	var plainHTTPCharts bool
	pf.BoolVar(&plainHTTPCharts, "plain-http-charts", false, "pull oci:// Helm charts over plain HTTP (local registries)")
	root.PersistentPreRun = func(*cobra.Command, []string) { render.DefaultCharts.PlainHTTP = plainHTTPCharts }
	root.AddCommand(newValidate(g), newBuild(g), newDiff(g), newApply(g), newRun(g), newStatus(g), newDev(g), newRelease(g), newImage(g), newSecret(g), newAgent(g), newBootstrap(g), newBackupCmd(g), nodecli.New(&nodecli.Env{Stdout: stdout, Stderr: stderr, Output: &g.output, LogLevel: &g.logLevel, Version: Version}), newMachines(g))
	return root
}

// Main runs the CLI and returns the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return MainIO(ctx, args, os.Stdin, stdout, stderr)
}

// MainIO is Main with an explicit standard input.
func MainIO(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := New(stdout, stderr)
	root.SetIn(stdin)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return exitCode(root, err, stdout, stderr)
}
