package restic

import (
	"bytes"
	"regexp"
	"strings"
)

// lineWriter splits what is written into lines and hands each to fn,
// cutting lines longer than max so that no output can fill memory.
type lineWriter struct {
	max  int
	fn   func([]byte)
	buf  []byte
	skip bool // inside a line that was cut
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if !w.skip {
			room := w.max - len(w.buf)
			if len(chunk) > room {
				w.buf = append(w.buf, chunk[:room]...)
				w.skip = true
			} else {
				w.buf = append(w.buf, chunk...)
			}
		}
		if i < 0 {
			break
		}
		w.emit()
		p = p[i+1:]
	}
	return n, nil
}

func (w *lineWriter) emit() {
	line := bytes.TrimRight(w.buf, "\r")
	w.fn(line)
	w.buf, w.skip = w.buf[:0], false
}

// flush hands on a last line that had no newline.
func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.emit()
	}
}

// tailBuffer keeps the last max bytes of the lines added, whole lines only.
type tailBuffer struct {
	max   int
	lines []string
	size  int
}

func (t *tailBuffer) add(line []byte) {
	s := string(line)
	t.lines = append(t.lines, s)
	t.size += len(s) + 1
	for t.size > t.max && len(t.lines) > 1 {
		t.size -= len(t.lines[0]) + 1
		t.lines = t.lines[1:]
	}
}

func (t *tailBuffer) String() string { return strings.Join(t.lines, "\n") }

var ansiRE = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

// noise are restic's informational lines, not part of an error.
var noise = []string{
	"[", // progress: "[0:00] 100.00%  3 / 3 snapshots"
	"create exclusive lock", "load indexes", "check all packs", "check snapshots, trees and blobs",
	"read all data", "restoring <snapshot", "repository ", "using parent snapshot", "no parent snapshot found",
	"loading indexes", "loading all snapshots", "finding data", "searching used packs", "collecting packs",
	"warning: running prune without a cache", "is there a repository at the following location?",
	"signal interrupt received", "applying policy", "open repository", "lock repository", "s3:", "rest:",
	"the `unlock` command can be used", "lock was created at", "storage id ", "warning: at least one source file",
	"no errors were found", "created restic repository", "please note that knowledge", "the repository. losing",
	"irrecoverably lost", "scheduled", "keep ", "remove ", "to repack", "this removes", "to delete", "total prune",
	"remaining:", "unused size after prune", "repacking packs", "rebuilding index", "deleting obsolete", "removing ",
	"done", "{", "summary", "files:", "dirs:", "added to the repository", "processed ",
}

// message is the part of restic's standard error that says what went
// wrong: informational lines dropped, "Fatal: " cut, runs of retries
// collapsed to the last, at most the last 10 lines, joined with "; ".
func message(stderr string) string {
	var out []string
	lastRetry := -1
	for _, l := range strings.Split(stderr, "\n") {
		l = strings.TrimSpace(ansiRE.ReplaceAllString(l, ""))
		if l == "" {
			continue
		}
		low := strings.ToLower(l)
		if isNoise(low) {
			continue
		}
		l = strings.TrimPrefix(l, "Fatal: ")
		if strings.Contains(low, "returned error, retrying after") {
			if lastRetry >= 0 && lastRetry == len(out)-1 {
				out[lastRetry] = l
				continue
			}
			lastRetry = len(out)
		}
		if len(out) > 0 && out[len(out)-1] == l {
			continue
		}
		out = append(out, l)
	}
	if len(out) > 10 {
		out = out[len(out)-10:]
	}
	s := strings.Join(out, "; ")
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return s
}

func isNoise(low string) bool {
	for _, p := range noise {
		if strings.HasPrefix(low, p) {
			return true
		}
	}
	return false
}
