package pipelines

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestGeneratedDocsUpToDate keeps the committed schema and reference equal
// to what the code generates.
func TestGeneratedDocsUpToDate(t *testing.T) {
	for file, gen := range map[string]func() ([]byte, error){
		"../docs/schema/pipeline.schema.json": Schema,
		"../docs/reference.md":                Reference,
	} {
		want, err := gen()
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.FromSlash(file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run go generate ./pipelines", file)
		}
	}
}

func TestSchemaContent(t *testing.T) {
	data, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		ID   string `json:"$id"`
		Ref  string `json:"$ref"`
		Defs map[string]struct {
			Properties           map[string]map[string]any `json:"properties"`
			Required             []string                  `json:"required"`
			MinProperties        *int                      `json:"minProperties"`
			MaxProperties        *int                      `json:"maxProperties"`
			AdditionalProperties *bool                     `json:"additionalProperties"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	if s.ID != SchemaID || s.Ref != "#/$defs/Pipeline" {
		t.Errorf("$id %q $ref %q", s.ID, s.Ref)
	}
	prop := func(def, name, key string) any { return s.Defs[def].Properties[name][key] }
	checks := []struct {
		what      string
		got, want any
	}{
		{"duration is a string", prop("RetrySpec", "delay", "type"), "string"},
		{"duration pattern", prop("RetrySpec", "delay", "pattern"), durationPattern},
		{"secret is a string", prop("SASLSpec", "password", "type"), "string"},
		{"secret map values are strings", prop("FunctionSpec", "headers", "additionalProperties"), map[string]any{"type": "string"}},
		{"default from ApplyDefaults", prop("DeliverySpec", "ordering", "default"), "partition"},
		{"duration default", prop("DeliverySpec", "maxEventAge", "default"), "24h"},
		{"int default", prop("ConcurrencySpec", "max", "default"), float64(256)},
		{"description from doc comment", prop("KafkaSink", "brokers", "description"), "Brokers defaults to the Kafka source's brokers."},
		{"exactly one source", *s.Defs["SourceSpec"].MaxProperties, 1},
		{"exactly one sink", *s.Defs["RouteSpec"].MinProperties, 1},
		{"exactly one dialect", *s.Defs["FilterSpec"].MaxProperties, 1},
		{"unknown fields rejected", *s.Defs["KafkaSource"].AdditionalProperties, false},
		{"required fields", s.Defs["KafkaSource"].Required, []string{"brokers", "topics", "group"}},
		{"function optional (function-less pipelines)", s.Defs["PipelineSpec"].Required, []string{"source"}},
	}
	for _, c := range checks {
		if !jsonEqual(c.got, c.want) {
			t.Errorf("%s: got %#v, want %#v", c.what, c.got, c.want)
		}
	}
}

func jsonEqual(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}
