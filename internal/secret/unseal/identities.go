package unseal

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"filippo.io/age"

	"tend.dev/tend/internal/model"
)

// Identities are the age identities tend may decrypt with.
type Identities struct {
	parsed []age.Identity
	// Sources says where they came from, for messages (never the keys).
	Sources []string
}

// Len is the number of identities.
func (ids *Identities) Len() int {
	if ids == nil {
		return 0
	}
	return len(ids.parsed)
}

// Age returns the parsed identities, for the sops library's key service.
func (ids *Identities) Age() []age.Identity {
	if ids == nil {
		return nil
	}
	return ids.parsed
}

// Add parses identities in age's text format (AGE-SECRET-KEY-1… lines).
func (ids *Identities) Add(source string, text []byte) error {
	parsed, err := age.ParseIdentities(bytes.NewReader(text))
	if err != nil {
		return model.WithHint(fmt.Errorf("read age identities from %s: %v", source, RedactKeys(err.Error())),
			"the file must hold AGE-SECRET-KEY-1… lines, as `tend secret keygen` writes")
	}
	ids.parsed = append(ids.parsed, parsed...)
	ids.Sources = append(ids.Sources, source)
	return nil
}

// Warning is a non-fatal finding, such as loose file permissions.
type Warning string

// LoadFile reads identities from a file and warns when other users may
// read it.
func (ids *Identities) LoadFile(path string) (Warning, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", model.WithHint(fmt.Errorf("age identity file: %w", err), "create one with `tend secret keygen --out FILE`")
	}
	var warn Warning
	if st.Mode().Perm()&0o077 != 0 {
		warn = Warning(fmt.Sprintf("age identity file %s has mode %04o: other users may read it; run chmod 600 %s", path, st.Mode().Perm(), path))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return warn, err
	}
	return warn, ids.Add(path, data)
}

// Recipients returns the public recipients of the identities.
func (ids *Identities) Recipients() []string {
	var out []string
	for _, p := range ids.Age() {
		if x, ok := p.(*age.X25519Identity); ok {
			out = append(out, x.Recipient().String())
		}
	}
	return out
}

// RedactKeys cuts a message at the first secret key it quotes: age's parse
// errors may echo the offending line.
func RedactKeys(s string) string {
	if i := strings.Index(s, "AGE-SECRET-KEY-"); i >= 0 {
		return s[:i] + "AGE-SECRET-KEY-…"
	}
	return s
}
