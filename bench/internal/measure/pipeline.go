// Package measure runs Sluice over a pipeline and samples what it does:
// events processed, AIMD limit and in-flight (from /metrics), CPU time and
// memory (from /proc), and the function's own counters (from /stats).
package measure

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Pipeline holds the knobs benchmarks vary in a Kafka → function pipeline;
// YAML renders it in the documented format.
type Pipeline struct {
	Name    string
	Brokers []string
	Topic   string
	Group   string
	// Source, if set, replaces the Kafka source (Brokers, Topic, Group):
	// one YAML flow mapping put under `source:`, such as
	// `rabbitmq: {url: "amqp://…", queue: q}`.
	Source string
	URL    string
	// Mode is binary (default) or batch.
	Mode string
	// BatchMax is function.batch.maxEvents in batch mode (0: Sluice's default).
	BatchMax int
	// Ordering is key, partition or none.
	Ordering string
	// Initial, Min, Max are the concurrency bounds; all zero leaves
	// Sluice's defaults.
	Initial, Min, Max int
}

// Fixed sets the concurrency to exactly n (no AIMD movement).
func (p Pipeline) Fixed(n int) Pipeline {
	p.Initial, p.Min, p.Max = n, n, n
	return p
}

// YAML renders the pipeline document.
func (p Pipeline) YAML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: sluice.dev/v1\nkind: Pipeline\nmetadata: {name: %s, tenant: bench}\nspec:\n", p.Name)
	if p.Source != "" {
		fmt.Fprintf(&b, "  source:\n    %s\n", p.Source)
	} else {
		fmt.Fprintf(&b, "  source:\n    kafka: {brokers: [%s], topics: [%s], group: %s, start: earliest}\n",
			quoteAll(p.Brokers), p.Topic, p.Group)
	}
	mode := p.Mode
	if mode == "" {
		mode = "binary"
	}
	fmt.Fprintf(&b, "  function:\n    url: %q\n    mode: %s\n    timeout: 30s\n", p.URL, mode)
	if mode == "batch" && p.BatchMax > 0 {
		fmt.Fprintf(&b, "    batch: {maxEvents: %d}\n", p.BatchMax)
	}
	fmt.Fprintf(&b, "  delivery:\n    ordering: %s\n", p.Ordering)
	if p.Initial+p.Min+p.Max > 0 {
		fmt.Fprintf(&b, "    concurrency: {initial: %d, min: %d, max: %d}\n", p.Initial, p.Min, p.Max)
	}
	return b.String()
}

// ID is the pipeline's tenant/name, the "pipeline" label of its metrics.
func (p Pipeline) ID() string { return "bench/" + p.Name }

// Write saves the YAML as dir/<file> and returns its path.
func (p Pipeline) Write(dir, file string) (string, error) {
	path := filepath.Join(dir, file)
	if err := os.WriteFile(path, []byte(p.YAML()), 0o644); err != nil {
		return "", fmt.Errorf("write pipeline: %w", err)
	}
	return path, nil
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
