package filter

import (
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/pipelines"
)

func TestCompileAndMatch(t *testing.T) {
	e := cloudevents.NewEvent()
	e.SetID("1")
	e.SetSource("kafka://b/orders")
	e.SetType("com.acme.order.created")
	e.SetSubject("order-42")
	e.SetExtension("region", "eu")

	cases := []struct {
		name string
		spec *pipelines.FilterSpec
		want bool
	}{
		{"nil matches all", nil, true},
		{"exact hit", &pipelines.FilterSpec{Exact: map[string]string{"type": "com.acme.order.created"}}, true},
		{"exact miss", &pipelines.FilterSpec{Exact: map[string]string{"type": "com.acme.order"}}, false},
		{"exact attribute names are case-insensitive", &pipelines.FilterSpec{Exact: map[string]string{"Type": "com.acme.order.created"}}, true},
		{"prefix", &pipelines.FilterSpec{Prefix: map[string]string{"type": "com.acme.order."}}, true},
		{"suffix", &pipelines.FilterSpec{Suffix: map[string]string{"subject": "-42"}}, true},
		{"extension", &pipelines.FilterSpec{Exact: map[string]string{"region": "eu"}}, true},
		{"absent attribute never matches", &pipelines.FilterSpec{Prefix: map[string]string{"dataschema": ""}}, false},
		{"all", &pipelines.FilterSpec{All: []pipelines.FilterSpec{
			{Exact: map[string]string{"region": "eu"}}, {Suffix: map[string]string{"type": ".created"}}}}, true},
		{"all one fails", &pipelines.FilterSpec{All: []pipelines.FilterSpec{
			{Exact: map[string]string{"region": "us"}}, {Suffix: map[string]string{"type": ".created"}}}}, false},
		{"any", &pipelines.FilterSpec{Any: []pipelines.FilterSpec{
			{Exact: map[string]string{"region": "us"}}, {Suffix: map[string]string{"type": ".created"}}}}, true},
		{"not", &pipelines.FilterSpec{Not: &pipelines.FilterSpec{Exact: map[string]string{"region": "eu"}}}, false},
		{"sql", &pipelines.FilterSpec{SQL: "region = 'eu' AND type LIKE 'com.acme.%'"}, true},
		{"sql missing attribute is no match", &pipelines.FilterSpec{SQL: "nosuch = 'x'"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Compile(c.spec)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Match(&e); got != c.want {
				t.Fatalf("Match = %v, want %v", got, c.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	if _, err := Compile(&pipelines.FilterSpec{SQL: "type = "}); err == nil {
		t.Fatal("bad CESQL compiled")
	}
	if _, err := Compile(&pipelines.FilterSpec{}); err == nil {
		t.Fatal("empty filter compiled")
	}
	if _, err := Compile(&pipelines.FilterSpec{Any: []pipelines.FilterSpec{{}}}); err == nil {
		t.Fatal("empty nested filter compiled")
	}
}

func FuzzCompileSQL(f *testing.F) {
	for _, s := range []string{"type = 'a'", "type = ", "EXISTS subject", "a LIKE 'b%' AND (c = 1 OR d)", "((("} {
		f.Add(s)
	}
	e := cloudevents.NewEvent()
	e.SetID("1")
	e.SetSource("s")
	e.SetType("t")
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := Compile(&pipelines.FilterSpec{SQL: s})
		if err != nil {
			return
		}
		flt.Match(&e) // must not panic
	})
}
