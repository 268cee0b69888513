package restic

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Snapshot is one snapshot in the repository.
type Snapshot struct {
	ID      string    `json:"id"`
	ShortID string    `json:"shortID"`
	Time    time.Time `json:"time"`
	Host    string    `json:"host"`
	Tags    []string  `json:"tags,omitempty"`
	Paths   []string  `json:"paths"`
	Parent  string    `json:"parent,omitempty"`
}

// restic's snapshot JSON.
type rawSnapshot struct {
	ID       string    `json:"id"`
	ShortID  string    `json:"short_id"`
	Time     time.Time `json:"time"`
	Hostname string    `json:"hostname"`
	Tags     []string  `json:"tags"`
	Paths    []string  `json:"paths"`
	Parent   string    `json:"parent"`
}

func (s rawSnapshot) snapshot() Snapshot {
	short := s.ShortID
	if short == "" && len(s.ID) >= 8 {
		short = s.ID[:8]
	}
	return Snapshot{ID: s.ID, ShortID: short, Time: s.Time, Host: s.Hostname, Tags: s.Tags, Paths: s.Paths, Parent: s.Parent}
}

func sortSnapshots(s []Snapshot) {
	sort.SliceStable(s, func(i, j int) bool {
		if !s[i].Time.Equal(s[j].Time) {
			return s[i].Time.Before(s[j].Time)
		}
		return s[i].ID < s[j].ID
	})
}

// filterArgs select snapshots that carry all tags, of host ("" any).
func filterArgs(tags []string, host string) []string {
	var args []string
	if len(tags) > 0 {
		args = append(args, "--tag", strings.Join(tags, ","))
	}
	if host != "" {
		args = append(args, "--host", host)
	}
	return args
}

// Snapshots lists the snapshots that carry all of tags, of host ("" for
// any), oldest first.
func (r *Repo) Snapshots(ctx context.Context, tags []string, host string) ([]Snapshot, error) {
	return r.snapshots(ctx, "", append([]string{"snapshots", "--json"}, filterArgs(tags, host)...))
}

func (r *Repo) snapshotsByID(ctx context.Context, ids ...string) ([]Snapshot, error) {
	return r.snapshots(ctx, strings.Join(ids, " "), append([]string{"snapshots", "--json", "--"}, ids...))
}

func (r *Repo) snapshots(ctx context.Context, snap string, args []string) ([]Snapshot, error) {
	var out bytes.Buffer
	c := call{op: "snapshots", snapshot: snap, args: args, stdout: &out}
	if _, err := r.run(ctx, c); err != nil {
		return nil, err
	}
	var raw []rawSnapshot
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &raw); err != nil && out.Len() > 0 {
		return nil, r.fail(c, fmt.Sprintf("reading restic's snapshot list: %v", err), err)
	}
	snaps := make([]Snapshot, 0, len(raw))
	for _, s := range raw {
		snaps = append(snaps, s.snapshot())
	}
	sortSnapshots(snaps)
	return snaps, nil
}

// Latest returns the newest snapshot that carries all of tags, of host
// ("" for any); an error of KindNoSnapshot when there is none.
func (r *Repo) Latest(ctx context.Context, tags []string, host string) (Snapshot, error) {
	snaps, err := r.Snapshots(ctx, tags, host)
	if err != nil {
		return Snapshot{}, err
	}
	if len(snaps) == 0 {
		what := "no snapshot"
		if len(tags) > 0 {
			what += " tagged " + strings.Join(tags, ",")
		}
		if host != "" {
			what += " of host " + host
		}
		return Snapshot{}, &Error{Op: "snapshots", Repo: r.redactedURL(), Kind: KindNoSnapshot, Msg: what, Hint: hints[KindNoSnapshot]}
	}
	return snaps[len(snaps)-1], nil
}

// resolve turns a snapshot reference into a snapshot: an ID (full or
// short), or "latest", the newest of r.Host (any host when Host is empty).
// Tag filters: resolve with Latest first and pass the ID.
func (r *Repo) resolve(ctx context.Context, ref string) (Snapshot, error) {
	if ref == "" || ref == "latest" {
		return r.Latest(ctx, nil, r.Host)
	}
	snaps, err := r.snapshotsByID(ctx, ref)
	if err == nil && len(snaps) == 1 {
		return snaps[0], nil
	}
	if err != nil && KindOf(err) != "" {
		return Snapshot{}, err
	}
	return Snapshot{}, &Error{Op: "snapshots", Repo: r.redactedURL(), Snapshot: ref, Kind: KindNoSnapshot, Msg: "no such snapshot", Hint: hints[KindNoSnapshot]}
}
