// Package examples holds runnable examples; this test checks that every
// configuration file under examples/ is accepted by the loader, as `sluice
// validate` would.
package examples

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pipelines"
)

// exampleEnv are the environment variables the examples' READMEs ask
// users to set, with the values the local brokers use.
var exampleEnv = map[string]string{
	"SLUICE_RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:5672/",
	// examples/async
	"ACME_API_KEY":      "acme-example-key-0001",
	"ACME_API_KEY_NEXT": "acme-example-key-0002",
	"BETA_API_KEY":      "beta-example-key-0001",
	"RESIZE_TOKEN":      "Bearer example",
	// examples/bus/ingest
	"SHOP_API_KEY": "shop-demo-key-0123456789",
}

func TestEveryExamplePipelineLoads(t *testing.T) {
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ext := filepath.Ext(path); !d.IsDir() && (ext == ".yaml" || ext == ".yml") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no example pipelines found")
	}
	loader := pipelines.Loader{LookupEnv: func(name string) (string, bool) {
		if v, ok := exampleEnv[name]; ok {
			return v, true
		}
		return os.LookupEnv(name)
	}}
	for _, f := range files {
		t.Run(strings.ReplaceAll(f, string(filepath.Separator), "_"), func(t *testing.T) {
			// One file at a time: examples may reuse pipeline names.
			cfg, err := loader.Config(f)
			if err != nil {
				t.Fatalf("%v", err)
			}
			if len(cfg.Pipelines)+len(cfg.Tenants)+len(cfg.Functions)+len(cfg.Buses) == 0 {
				t.Errorf("%s holds no document", f)
			}
		})
	}
}
