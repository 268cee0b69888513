package backup

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"tend.dev/tend/internal/model"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestNext(t *testing.T) {
	tests := []struct {
		name  string
		sched model.Schedule
		after string
		want  string
	}{
		{name: "daily in UTC", sched: model.Schedule{Cron: "30 2 * * *"}, after: "2026-12-04T10:00:00Z", want: "2026-12-05T02:30:00Z"},
		{name: "daily in Berlin, winter", sched: model.Schedule{Cron: "30 2 * * *", TimeZone: "Europe/Berlin"}, after: "2026-12-04T10:00:00Z", want: "2026-12-05T01:30:00Z"},
		{name: "daily in Berlin, summer", sched: model.Schedule{Cron: "30 2 * * *", TimeZone: "Europe/Berlin"}, after: "2026-07-04T10:00:00Z", want: "2026-07-05T00:30:00Z"},
		// 02:30 does not exist on the night clocks go forward: that slot is
		// skipped (docs/backups.md says so; schedule outside 02:00-03:00 to avoid it).
		{name: "Berlin, the night clocks go forward", sched: model.Schedule{Cron: "30 2 * * *", TimeZone: "Europe/Berlin"}, after: "2027-03-27T10:00:00Z", want: "2027-03-29T00:30:00Z"},
		{name: "hourly descriptor", sched: model.Schedule{Cron: "@hourly"}, after: "2026-12-04T10:15:00Z", want: "2026-12-04T11:00:00Z"},
		{name: "every 6h", sched: model.Schedule{Cron: "@every 6h"}, after: "2026-12-04T10:15:00Z", want: "2026-12-04T16:15:00Z"},
		{name: "weekly on Sunday", sched: model.Schedule{Cron: "0 4 * * 0"}, after: "2026-12-04T10:15:00Z", want: "2026-12-06T04:00:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Next(tc.sched, at(tc.after), "m1")
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(at(tc.want)) {
				t.Errorf("Next = %s, want %s", got.UTC().Format(time.RFC3339), tc.want)
			}
		})
	}
}

func TestJitter(t *testing.T) {
	s := model.Schedule{Cron: "0 3 * * *", Jitter: model.Duration{Duration: 30 * time.Minute}}
	seen := map[time.Duration]bool{}
	for _, m := range []string{"m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"} {
		j := Jitter(s, m)
		if j < 0 || j >= 30*time.Minute {
			t.Errorf("jitter of %s = %s, want within [0, 30m)", m, j)
		}
		if Jitter(s, m) != j {
			t.Errorf("jitter of %s changes between calls", m)
		}
		seen[j] = true
		next, _ := Next(s, at("2026-12-04T10:00:00Z"), m)
		if want := at("2026-12-05T03:00:00Z").Add(j); !next.Equal(want) {
			t.Errorf("Next for %s = %s, want %s", m, next, want)
		}
		// The run after a jittered run is the next day's, not the same slot again.
		again, _ := Next(s, next, m)
		if want := next.Add(24 * time.Hour); !again.Equal(want) {
			t.Errorf("Next after the run for %s = %s, want %s", m, again, want)
		}
	}
	if len(seen) < 6 {
		t.Errorf("8 machines got only %d distinct delays: the jitter does not spread them", len(seen))
	}
}

func TestDue(t *testing.T) {
	daily := model.Schedule{Cron: "0 3 * * *"}
	tests := []struct {
		name, last, since, now string
		wantDue                bool
		wantAt                 string
	}{
		{name: "new backup waits for its first slot", since: "2026-12-04T10:00:00Z", now: "2026-12-04T10:00:30Z"},
		{name: "first slot reached", since: "2026-12-04T10:00:00Z", now: "2026-12-05T03:00:05Z", wantDue: true, wantAt: "2026-12-05T03:00:00Z"},
		{name: "ran at the slot, not due again", last: "2026-12-05T03:00:00Z", since: "2026-12-01T00:00:00Z", now: "2026-12-05T12:00:00Z"},
		{name: "agent down for three days: one run, for the newest slot", last: "2026-12-05T03:00:00Z", since: "2026-12-01T00:00:00Z", now: "2026-12-08T09:00:00Z", wantDue: true, wantAt: "2026-12-08T03:00:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var last time.Time
			if tc.last != "" {
				last = at(tc.last)
			}
			got, due, err := Due(daily, last, at(tc.since), at(tc.now), "m1")
			if err != nil {
				t.Fatal(err)
			}
			if due != tc.wantDue {
				t.Fatalf("due = %v, want %v", due, tc.wantDue)
			}
			if due && !got.Equal(at(tc.wantAt)) {
				t.Errorf("at = %s, want %s", got, tc.wantAt)
			}
		})
	}
}

func TestDueTasks(t *testing.T) {
	b := &model.Backup{Metadata: model.ObjectMeta{Name: "db"}, Spec: model.BackupSpec{
		Schedule: model.Schedule{Cron: "0 3 * * *"},
		Verify:   &model.Verify{Schedule: model.Schedule{Cron: "0 5 * * *"}},
	}}
	st := &State{}
	now := at("2026-12-04T10:00:00Z")
	if got := DueTasks([]*model.Backup{b}, st, now, now, "m1"); len(got) != 0 {
		t.Fatalf("a backup seen for the first time is due at once: %+v", got)
	}
	if !st.Backups["db"].Since.Equal(now) {
		t.Fatalf("since = %s, want %s", st.Backups["db"].Since, now)
	}
	// The agent was down from before 03:00 until 09:00 the next day.
	later := at("2026-12-05T09:00:00Z")
	type row struct {
		Kind    Kind
		Trigger Trigger
		Slot    time.Time
	}
	var got []row
	for _, task := range DueTasks([]*model.Backup{b}, st, later, later.Add(-time.Minute), "m1") {
		got = append(got, row{task.Kind, task.Trigger, task.Slot})
	}
	want := []row{
		{KindBackup, Missed, at("2026-12-05T03:00:00Z")},
		{KindVerify, Missed, at("2026-12-05T05:00:00Z")},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tasks (-want +got):\n%s", diff)
	}
	if n := NextRun([]*model.Backup{b}, st, later, "m1"); !n.Equal(at("2026-12-05T05:00:00Z")) && !n.Equal(at("2026-12-06T03:00:00Z")) {
		t.Errorf("NextRun = %s", n)
	}
}

func TestRecordHistoryIsBounded(t *testing.T) {
	r := &Record{}
	for i := range 50 {
		res := Succeeded
		if i%2 == 1 {
			res = Failed
		}
		r.Add(Run{Kind: KindBackup, Result: res, Snapshot: string(rune('a' + i%26))})
	}
	if len(r.History) != HistoryLen {
		t.Errorf("history holds %d runs, want %d", len(r.History), HistoryLen)
	}
	if r.Last.Result != Failed || r.LastSuccess == nil || r.LastSuccess.Result != Succeeded {
		t.Errorf("last = %+v, last success = %+v", r.Last, r.LastSuccess)
	}
}
