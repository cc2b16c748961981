// Package harness is the frame every Sluice benchmark plugs into: the
// Scenario contract, the environment a scenario runs in, the report it
// returns (tables, bars, figures), progress output, machine description and
// the results file. See docs/benchmarks.md.
//
// A scenario is a value registered in bench/cmd/sluice-bench/registry.go;
// nothing registers itself.
package harness

import (
	"context"
	"flag"
	"io"
)

// Scenario is one benchmark of BENCHMARKS.md.
type Scenario struct {
	// Name selects the scenario: `make bench B=<name>`, lower case ("b1").
	Name string
	// Title is one line saying what is measured.
	Title string
	// Brokers are started with `scripts/brokers.sh up <name>` before Run
	// (idempotent), e.g. "kafka".
	Brokers []string
	// Flags registers the scenario's own knobs on fs, named "<name>.<knob>"
	// (e.g. "b2.phase"), and returns the run function bound to them. It is
	// called once, before flags are parsed; Run is called after, and only
	// if the scenario was selected.
	Flags func(fs *flag.FlagSet) Run
}

// Run measures a scenario. It starts what it needs (topics, function
// processes, Sluice processes) and stops all of it before returning,
// including when ctx is cancelled (then it returns ctx's error). A nil
// error with a report whose bars are missed is a successful benchmark.
type Run func(ctx context.Context, env *Env) (*Report, error)

// Env is what the harness gives a running scenario. It is not shared
// between scenarios.
type Env struct {
	// Root is the repository root (the directory holding go.mod).
	Root string
	// Sluice and Function are paths to freshly built binaries of
	// ./cmd/sluice and ./examples/function.
	Sluice, Function string
	// Runs is how many times each measurement is repeated (the report
	// gives medians); at least 1.
	Runs int
	// Events overrides the scenario's main event count when positive (each
	// scenario documents what it scales).
	Events int
	// KafkaBrokers are the bootstrap brokers, "host:port".
	KafkaBrokers []string
	// WorkDir is a directory for this scenario's pipeline files and the
	// logs of the processes it starts; kept after the run for inspection.
	WorkDir string
	// ID is unique per bench invocation and scenario; use it in topic and
	// group names so that runs never share broker state by accident.
	ID string
	// Progress reports what is running; Log receives notes (stderr).
	Progress *Progress
	Log      io.Writer
}

// EventsOr returns Events if it is positive, else def.
func (e *Env) EventsOr(def int) int {
	if e.Events > 0 {
		return e.Events
	}
	return def
}
