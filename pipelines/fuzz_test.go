package pipelines

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad checks that no input makes the loader panic, and that what it
// accepts passes Validate too.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(fullDoc))
	f.Add([]byte(header + okSpec))
	f.Add([]byte("a: &a [*a, *a]\n---\n<<: *a\n"))
	f.Add([]byte("---\n---\n" + header + okSpec + "...\n%YAML 1.2\n---\n"))
	f.Add([]byte(kindsFullDoc))
	for _, name := range []string{"pipelines/orders-billing.yaml", "async/tenants.yaml", "async/functions.yaml", "bus/orders.yaml"} {
		if ex, err := os.ReadFile(filepath.FromSlash("../examples/" + name)); err == nil {
			f.Add(ex)
		}
	}
	loader := kindsLoader() // no environment or disk access
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := loader.Parse("f.yaml", data)
		if err != nil {
			var le *LoadError
			if !errors.As(err, &le) || len(le.Errors) == 0 || cfg != nil {
				t.Fatalf("error %v (%T) with config %v", err, err, cfg)
			}
			for _, fe := range le.Errors {
				if fe.Msg == "" {
					t.Fatalf("empty message in %v", fe)
				}
			}
			return
		}
		for _, p := range cfg.Pipelines {
			if err := Validate(p); err != nil {
				t.Fatalf("loaded pipeline fails Validate: %v", err)
			}
		}
	})
}
