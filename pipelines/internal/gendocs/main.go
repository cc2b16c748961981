// Command gendocs writes the generated configuration documentation: the
// JSON Schemas (of Pipeline documents, and of every kind) and the field
// reference. Run it with "go generate ./pipelines"; a
// test in package pipelines fails when the committed files are stale.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluicehq/sluice/pipelines"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}

func run() error {
	schemaPath := flag.String("schema", "docs/schema/pipeline.schema.json", "where to write the JSON Schema of Pipeline documents")
	configSchemaPath := flag.String("config-schema", "docs/schema/sluice.schema.json", "where to write the JSON Schema of every kind")
	referencePath := flag.String("reference", "docs/reference.md", "where to write the field reference")
	flag.Parse()

	schema, err := pipelines.Schema()
	if err != nil {
		return err
	}
	configSchema, err := pipelines.ConfigSchema()
	if err != nil {
		return err
	}
	reference, err := pipelines.Reference()
	if err != nil {
		return err
	}
	for path, data := range map[string][]byte{*schemaPath: schema, *configSchemaPath: configSchema, *referencePath: reference} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
