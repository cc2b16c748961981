package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = run(args, &o, &e)
	return o.String(), e.String(), err
}

func TestValidateReportsEveryErrorWithPositions(t *testing.T) {
	dir := t.TempDir()
	bad := `apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {name: Bad_Name}
spec:
  source:
    kafka: {brokers: ["127.0.0.1:9092"], topics: [orders], group: g, strat: earliest}
  function: {url: "http://127.0.0.1:8080/", timeout: 2x}
  delivery: {ordering: sideways}
`
	path := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := runCLI(t, "validate", path)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("validate err = %v, want exit 1", err)
	}
	for _, want := range []string{
		path + ":3:", "metadata.name",
		path + ":6:", "spec.source.kafka.strat",
		path + ":7:", "spec.function.timeout",
		path + ":8:", "spec.delivery.ordering",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("validate output lacks %q:\n%s", want, stderr)
		}
	}
}

func TestValidateAcceptsExamples(t *testing.T) {
	stdout, stderr, err := runCLI(t, "validate", "../../examples/pipelines")
	if err != nil {
		t.Fatalf("validate examples: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "ok ") {
		t.Fatalf("validate printed %q", stdout)
	}
}

func TestValidateListsEveryKind(t *testing.T) {
	for _, name := range []string{"ACME_API_KEY", "ACME_API_KEY_NEXT", "BETA_API_KEY", "RESIZE_TOKEN"} {
		t.Setenv(name, "test-value-of-"+name)
	}
	stdout, stderr, err := runCLI(t, "validate", "../../examples/bus", "../../examples/async")
	if err != nil {
		t.Fatalf("validate: %v\n%s", err, stderr)
	}
	async, bus := filepath.FromSlash("../../examples/async/"), filepath.FromSlash("../../examples/bus/")
	want := "ok  Function acme/resize (" + async + "functions.yaml:11)\n" +
		"ok  Function beta/echo (" + async + "functions.yaml:29)\n" +
		"ok  Tenant acme (" + async + "tenants.yaml:10)\n" +
		"ok  Tenant beta (" + async + "tenants.yaml:19)\n" +
		"ok  Pipeline acme/orders-enrich (" + bus + "orders.yaml:6)\n" +
		"ok  Bus acme/orders (" + bus + "orders.yaml:17)\n" +
		"ok  Bus acme/audit (" + bus + "orders.yaml:49)\n"
	if stdout != want {
		t.Errorf("validate printed\n%s\nwant\n%s", stdout, want)
	}
	if strings.Contains(stdout+stderr, "test-value-of-") {
		t.Errorf("validate printed a secret")
	}
}

func TestVersionAndSchema(t *testing.T) {
	out, _, err := runCLI(t, "version")
	if err != nil || !strings.HasPrefix(out, "sluice ") {
		t.Fatalf("version = %q, %v", out, err)
	}
	out, _, err = runCLI(t, "schema")
	if err != nil || !strings.Contains(out, `"$schema"`) {
		t.Fatalf("schema = %.80q, %v", out, err)
	}
}

func TestRunRefusesBadFlags(t *testing.T) {
	_, _, err := runCLI(t, "run", "../../examples/pipelines", "--log-format", "xml")
	if err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Fatalf("run with a bad log format: %v", err)
	}
}
