package pipelines

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// redacted is what a Secret prints instead of its value.
const redacted = "[redacted]"

// shown is what may be printed for s: its reference, or "[redacted]" for a
// literal (whose text is the secret itself).
func (s Secret) shown() string {
	switch {
	case s.Ref != "":
		return s.Ref
	case s.Value() != "":
		return redacted
	default:
		return ""
	}
}

// Format prints s redacted whatever the verb, so no fmt verb (%d, %x, ...)
// can reach the unexported value through reflection. %#v prints GoString.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, s.GoString())
		return
	}
	fmt.Fprint(f, s.String())
}

// GoString shows the reference, never the value.
func (s Secret) GoString() string {
	return "pipelines.Secret{Ref: " + strconv.Quote(s.shown()) + "}"
}

// MarshalJSON writes the reference, or "[redacted]" for a literal.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.shown()) }

// MarshalYAML writes the reference, or "[redacted]" for a literal.
func (s Secret) MarshalYAML() (any, error) { return s.shown(), nil }

// LogValue keeps slog handlers from reflecting into the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.shown()) }

// envNameRE is what ${env:NAME} accepts as NAME.
var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// secretResolver turns the text of a Secret field into a Secret. Errors
// never quote the text unless it is a well-formed reference, which is safe to
// show.
type secretResolver struct {
	dir       string // directory of the YAML file, for relative ${file:} paths
	lookupEnv func(string) (string, bool)
	readFile  func(string) ([]byte, error)
}

// resolve parses text: ${env:NAME}, ${file:PATH}, or a literal. A string
// containing "${" anywhere else is rejected rather than taken literally, as
// it is most likely a mistyped reference (a literal containing "${" can be
// kept in a file).
func (r secretResolver) resolve(text string) (Secret, error) {
	if !strings.Contains(text, "${") {
		return NewSecret("", text), nil
	}
	inner, ok := strings.CutPrefix(text, "${")
	if ok {
		inner, ok = strings.CutSuffix(inner, "}")
	}
	if !ok || strings.Contains(inner, "${") {
		return Secret{}, fmt.Errorf("a secret reference must be the whole value: ${env:NAME} or ${file:PATH}")
	}
	scheme, arg, _ := strings.Cut(inner, ":")
	switch scheme {
	case "env":
		if !envNameRE.MatchString(arg) {
			return Secret{}, fmt.Errorf("invalid environment variable name %q in secret reference", arg)
		}
		v, ok := r.lookupEnv(arg)
		if !ok {
			return Secret{}, fmt.Errorf("environment variable %q is not set", arg)
		}
		return NewSecret(text, v), nil
	case "file":
		if arg == "" {
			return Secret{}, fmt.Errorf("empty path in secret reference ${file:PATH}")
		}
		path := arg
		if !filepath.IsAbs(path) {
			path = filepath.Join(r.dir, path)
		}
		b, err := r.readFile(path)
		if err != nil {
			return Secret{}, fmt.Errorf("reading secret file: %w", err)
		}
		return NewSecret(text, strings.TrimRight(string(b), "\r\n")), nil
	default:
		return Secret{}, fmt.Errorf("unsupported secret reference: want ${env:NAME} or ${file:PATH}")
	}
}
