package node

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"tend.dev/tend/internal/fleet"
	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/rollout"
)

// SlotUser is the user on the coordinator agents take slots as.
const SlotUser = "tend-slots"

// NewSlots returns the slots of pool p as machine cfg.Machine sees them.
func NewSlots(p *model.MachinePool, cfg *Config) (Slots, error) {
	coord := p.Coordinator()
	if coord == nil {
		return nil, fmt.Errorf("pool %s has no coordinator", p.Metadata.Name)
	}
	if coord.Name == cfg.Machine {
		return &localSlots{store: rollout.Store{Dir: rollout.DefaultDir}, pool: p.Metadata.Name, machine: cfg.Machine}, nil
	}
	if cfg.SlotKeyFile == "" {
		return nil, model.WithHint(fmt.Errorf("no slot key configured"), "re-run tend bootstrap machines: it gives each machine a key for the coordinator")
	}
	signer, err := fleet.LoadSigner(cfg.SlotKeyFile)
	if err != nil {
		return nil, err
	}
	return &remoteSlots{dialer: &fleet.Dialer{Signers: []ssh.Signer{signer}}, coord: coord}, nil
}

type localSlots struct {
	store         rollout.Store
	pool, machine string
}

func (l *localSlots) Acquire(_ context.Context, max int, reason string) (rollout.Grant, error) {
	return l.store.Acquire(l.pool, l.machine, max, reason)
}
func (l *localSlots) Note(_ context.Context, reason string) error {
	return l.store.Note(l.pool, l.machine, reason)
}
func (l *localSlots) Release(context.Context) error { return l.store.Release(l.pool, l.machine) }

// remoteSlots asks the coordinator over SSH; authorized_keys there pins
// the command and this machine's name.
type remoteSlots struct {
	dialer *fleet.Dialer
	coord  *model.Machine
}

func (r *remoteSlots) call(ctx context.Context, cmd string) ([]byte, error) {
	c, err := r.dialer.DialAs(ctx, r.coord, SlotUser)
	if err != nil {
		return nil, fmt.Errorf("reach the rollout coordinator: %w", err)
	}
	defer c.Close()
	out, err := fleet.Run(ctx, c, cmd, nil)
	if err != nil {
		return nil, fmt.Errorf("rollout coordinator %s: %w", r.coord.Name, err)
	}
	return out, nil
}

func (r *remoteSlots) Acquire(ctx context.Context, max int, reason string) (rollout.Grant, error) {
	var g rollout.Grant
	out, err := r.call(ctx, "acquire "+strconv.Itoa(max)+" "+oneLine(reason))
	if err != nil {
		return g, err
	}
	return g, json.Unmarshal(out, &g)
}

func (r *remoteSlots) Note(ctx context.Context, reason string) error {
	_, err := r.call(ctx, "note "+oneLine(reason))
	return err
}

func (r *remoteSlots) Release(ctx context.Context) error {
	_, err := r.call(ctx, "release")
	return err
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}
