package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"tend.dev/tend/internal/model"
)

// Answer is one machine's reply to a command run on every machine.
type Answer struct {
	Machine string
	Out     []byte
	Err     error
}

// Each runs command as root on every machine of p in parallel and returns
// the answers in pool order. An unreachable machine is an answer with its
// error; the others are not held up.
func Each(ctx context.Context, d *Dialer, p *model.MachinePool, command string) []Answer {
	out := make([]Answer, len(p.Spec.Machines))
	var wg sync.WaitGroup
	for i := range p.Spec.Machines {
		m := &p.Spec.Machines[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = Answer{Machine: m.Name}
			out[i].Out, out[i].Err = On(ctx, d, m, command)
		}()
	}
	wg.Wait()
	return out
}

// On runs command as root on machine m.
func On(ctx context.Context, d *Dialer, m *model.Machine, command string) ([]byte, error) {
	s, err := d.rootSession(ctx, m)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.run(ctx, command, nil)
}

// DecodeJSON decodes an answer's JSON output into v.
func (a Answer) DecodeJSON(v any) error {
	if a.Err != nil {
		return a.Err
	}
	if err := json.Unmarshal(a.Out, v); err != nil {
		return fmt.Errorf("machine %s: unreadable answer: %w", a.Machine, err)
	}
	return nil
}
