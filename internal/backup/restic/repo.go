package restic

import (
	"context"
	"errors"
	"strings"
)

// Open opens an existing repository; a missing one is KindNoRepository.
func (r *Repo) Open(ctx context.Context) error {
	_, err := r.run(ctx, call{op: "open", args: []string{"cat", "config"}, probe: true})
	return err
}

// Ensure opens the repository, and initialises it when its bucket exists
// but holds no repository at the prefix yet. A missing bucket is an error
// of KindNoBucket: restic 0.14's init would create it, so Ensure looks
// first, with a request whose error says which it is.
func (r *Repo) Ensure(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		_, err := r.run(ctx, call{op: "open", args: []string{"cat", "config"}, probe: true})
		if KindOf(err) != KindNoRepository {
			return err
		}
		_, err = r.run(ctx, call{op: "init", args: []string{"init"}})
		if err == nil {
			return nil
		}
		// Another target initialised it between our look and our init.
		var e *Error
		if attempt > 0 || !errors.As(err, &e) || !strings.Contains(strings.ToLower(e.Msg), "already exists") {
			return err
		}
	}
}

// Unlock removes stale locks: those of processes gone on this host, or
// older than 30 minutes. A killed run leaves one, which blocks check and
// prune (they need the repository to themselves).
func (r *Repo) Unlock(ctx context.Context) error {
	_, err := r.run(ctx, call{op: "unlock", args: []string{"unlock"}})
	return err
}

// Check verifies the repository's structure; with readData, it also reads
// and verifies every pack, which downloads the whole repository.
func (r *Repo) Check(ctx context.Context, readData bool) error {
	args := []string{"check"}
	if readData {
		args = append(args, "--read-data")
	}
	_, err := r.run(ctx, call{op: "check", args: args})
	return err
}
