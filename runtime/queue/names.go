package queue

import (
	"fmt"
	"strings"
)

// MaxNameLen bounds queue names: the consumer name derived from a queue name
// must fit JetStream's 255-byte limit, with room to spare.
const MaxNameLen = 200

// ValidName reports whether name can be used as a queue name: one or more
// dot-separated tokens of ASCII letters, digits, '-' and '_', at most
// MaxNameLen bytes. Dots give a hierarchy (tenant.function) that maps onto
// NATS subject tokens.
func ValidName(name string) bool {
	if name == "" || len(name) > MaxNameLen {
		return false
	}
	tokenLen := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if tokenLen == 0 {
				return false
			}
			tokenLen = 0
			continue
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
		tokenLen++
	}
	return tokenLen > 0
}

func checkName(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	return nil
}

// durableName is the JetStream consumer of a queue. Consumer names may not
// contain '.', and '~' cannot occur in a valid queue name, so the mapping is
// one to one.
func durableName(queue string) string {
	return strings.ReplaceAll(queue, ".", "~")
}
