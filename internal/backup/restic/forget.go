package restic

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// Keep is a retention policy: the last N snapshots plus the newest of each
// of the last N hours, days, weeks, months and years, as restic's forget
// counts them (in UTC).
type Keep struct {
	Last, Hourly, Daily, Weekly, Monthly, Yearly int
}

func (k Keep) args() []string {
	var args []string
	for _, f := range []struct {
		flag string
		n    int
	}{{"--keep-last", k.Last}, {"--keep-hourly", k.Hourly}, {"--keep-daily", k.Daily}, {"--keep-weekly", k.Weekly}, {"--keep-monthly", k.Monthly}, {"--keep-yearly", k.Yearly}} {
		if f.n > 0 {
			args = append(args, f.flag, fmt.Sprint(f.n))
		}
	}
	return args
}

// ForgetResult is what a policy keeps and removes, each oldest first.
type ForgetResult struct {
	Keep, Remove []Snapshot
}

// GroupBy is how Forget groups snapshots before applying a policy: one
// series per host and tag set. Not restic's default "host,paths": a
// Backup whose paths change would start a new group, and the old one
// would keep its snapshots for ever.
const GroupBy = "host,tags"

type forgetGroup struct {
	Tags   []string      `json:"tags"`
	Host   string        `json:"host"`
	Keep   []rawSnapshot `json:"keep"`
	Remove []rawSnapshot `json:"remove"`
}

// Forget applies k to the snapshots that carry all of tags, of host (""
// for any), grouped by GroupBy. It first asks restic what the policy
// would do (a dry run); unless dryRun, it then removes exactly those
// snapshots and prunes their data. It refuses, with an error of
// KindRefused and nothing deleted, a policy that keeps nothing, or one
// that would remove every snapshot of a group.
func (r *Repo) Forget(ctx context.Context, k Keep, tags []string, host string, dryRun bool) (ForgetResult, error) {
	var res ForgetResult
	refuse := func(msg string) error {
		return &Error{Op: "forget", Repo: r.redactedURL(), Kind: KindRefused, Msg: msg,
			Hint: "keep at least one snapshot, e.g. Last: 1"}
	}
	for _, n := range []int{k.Last, k.Hourly, k.Daily, k.Weekly, k.Monthly, k.Yearly} {
		if n < 0 {
			return res, refuse("negative count in the retention policy")
		}
	}
	if len(k.args()) == 0 {
		return res, refuse("the retention policy keeps no snapshot")
	}
	var out bytes.Buffer
	args := append([]string{"forget", "--json", "--dry-run", "--group-by", GroupBy}, k.args()...)
	c := call{op: "forget", args: append(args, filterArgs(tags, host)...), stdout: &out}
	if _, err := r.run(ctx, c); err != nil {
		return res, err
	}
	var groups []forgetGroup
	if b := bytes.TrimSpace(out.Bytes()); len(b) > 0 {
		if err := json.Unmarshal(b, &groups); err != nil {
			return res, r.fail(c, fmt.Sprintf("reading restic's forget plan: %v", err), err)
		}
	}
	var ids []string
	for _, g := range groups {
		if len(g.Keep) == 0 && len(g.Remove) > 0 {
			return ForgetResult{}, refuse(fmt.Sprintf("the policy would remove all %d snapshots of host %q tags %q", len(g.Remove), g.Host, strings.Join(g.Tags, ",")))
		}
		for _, s := range g.Keep {
			res.Keep = append(res.Keep, s.snapshot())
		}
		for _, s := range g.Remove {
			res.Remove = append(res.Remove, s.snapshot())
			ids = append(ids, s.ID)
		}
	}
	sortSnapshots(res.Keep)
	sortSnapshots(res.Remove)
	if dryRun || len(ids) == 0 {
		return res, nil
	}
	return res, r.ForgetIDs(ctx, ids...)
}

// ForgetIDs removes the snapshots ids and prunes the data only they used.
func (r *Repo) ForgetIDs(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := r.run(ctx, call{op: "forget", snapshot: strings.Join(ids, " "), args: append([]string{"forget", "--prune", "--"}, ids...)})
	return err
}
