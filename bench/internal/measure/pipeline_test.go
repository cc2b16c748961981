package measure

import (
	"testing"

	"github.com/sluicehq/sluice/pipelines"
)

// The YAML must be what `sluice run` accepts, with the knobs where the
// benchmark meant them.
func TestPipelineYAMLLoads(t *testing.T) {
	base := Pipeline{Name: "b1-key", Brokers: []string{"127.0.0.1:9092"}, Topic: "t", Group: "g",
		URL: "http://127.0.0.1:8080/", Ordering: "key"}
	tests := []struct {
		name              string
		pl                Pipeline
		initial, min, max int
		mode              string
		batch             int
	}{
		{"defaults", base, pipelines.DefaultConcurrencyInitial, pipelines.DefaultConcurrencyMin, pipelines.DefaultConcurrencyMax, "binary", 0},
		{"fixed", base.Fixed(32), 32, 32, 32, "binary", 0},
		{"batch", func() Pipeline { p := base; p.Mode, p.BatchMax = "batch", 50; return p }(),
			pipelines.DefaultConcurrencyInitial, pipelines.DefaultConcurrencyMin, pipelines.DefaultConcurrencyMax, "batch", 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, err := tt.pl.Write(t.TempDir(), "p.yaml")
			if err != nil {
				t.Fatal(err)
			}
			ps, err := pipelines.LoadPaths(path)
			if err != nil {
				t.Fatalf("load: %v\n%s", err, tt.pl.YAML())
			}
			if len(ps) != 1 {
				t.Fatalf("%d pipelines, want 1", len(ps))
			}
			p := ps[0]
			if p.ID() != tt.pl.ID() {
				t.Errorf("ID = %s, want %s", p.ID(), tt.pl.ID())
			}
			c := p.Spec.Delivery.Concurrency
			if c.Initial != tt.initial || c.Min != tt.min || c.Max != tt.max {
				t.Errorf("concurrency = %+v, want %d/%d/%d", c, tt.initial, tt.min, tt.max)
			}
			if p.Spec.Function.Mode != tt.mode || p.Spec.Function.URL != tt.pl.URL || p.Spec.Delivery.Ordering != "key" {
				t.Errorf("function/ordering = %+v %s", p.Spec.Function, p.Spec.Delivery.Ordering)
			}
			if tt.batch > 0 && p.Spec.Function.Batch.MaxEvents != tt.batch {
				t.Errorf("batch maxEvents = %d, want %d", p.Spec.Function.Batch.MaxEvents, tt.batch)
			}
			k := p.Spec.Source.Kafka
			if k == nil || k.Topics[0] != "t" || k.Group != "g" || k.Start != "earliest" {
				t.Errorf("kafka source = %+v", k)
			}
		})
	}
}
