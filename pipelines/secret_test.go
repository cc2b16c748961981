package pipelines

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

func TestSecretResolution(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"secrets/lf":   "from-file\n",
		"secrets/crlf": "from-file-crlf\r\n",
		"abs":          "absolute",
	})
	t.Setenv("SLUICE_TEST_SECRET", "from-env")
	t.Setenv("SLUICE_TEST_EMPTY", "")
	tests := []struct {
		text, wantRef, wantValue, wantErr string
	}{
		{text: "${env:SLUICE_TEST_SECRET}", wantRef: "${env:SLUICE_TEST_SECRET}", wantValue: "from-env"},
		{text: "${env:SLUICE_TEST_EMPTY}", wantRef: "${env:SLUICE_TEST_EMPTY}", wantValue: ""},
		{text: "${file:secrets/lf}", wantRef: "${file:secrets/lf}", wantValue: "from-file"},
		{text: "${file:secrets/crlf}", wantRef: "${file:secrets/crlf}", wantValue: "from-file-crlf"},
		{text: "${file:" + filepath.Join(dir, "abs") + "}", wantRef: "${file:" + filepath.Join(dir, "abs") + "}", wantValue: "absolute"},
		{text: "plain literal", wantValue: "plain literal"},
		{text: "$notref {x}", wantValue: "$notref {x}"},
		{text: "${env:SLUICE_TEST_UNSET_123}", wantErr: `environment variable "SLUICE_TEST_UNSET_123" is not set`},
		{text: "${file:secrets/none}", wantErr: "reading secret file: open " + filepath.Join(dir, "secrets", "none") + ": no such file or directory"},
		{text: "${file:}", wantErr: "empty path in secret reference ${file:PATH}"},
		{text: "${env:A}${env:B}", wantErr: "a secret reference must be the whole value: ${env:NAME} or ${file:PATH}"},
		{text: "${env:A", wantErr: "a secret reference must be the whole value: ${env:NAME} or ${file:PATH}"},
		{text: "${ENV:A}", wantErr: "unsupported secret reference: want ${env:NAME} or ${file:PATH}"},
		{text: "${env:A-B}", wantErr: `invalid environment variable name "A-B" in secret reference`},
	}
	r := secretResolver{dir: dir, lookupEnv: os.LookupEnv, readFile: os.ReadFile}
	for _, tt := range tests {
		s, err := r.resolve(tt.text)
		switch {
		case tt.wantErr != "":
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("resolve(%q) error = %v, want %q", tt.text, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("resolve(%q): %v", tt.text, err)
		case s.Ref != tt.wantRef || s.Value() != tt.wantValue:
			t.Errorf("resolve(%q) = ref %q value %q, want ref %q value %q", tt.text, s.Ref, s.Value(), tt.wantRef, tt.wantValue)
		}
	}
}

// TestSecretsRelativeToYAMLFile loads a file from another directory: its
// ${file:} references are relative to it, not to the working directory.
func TestSecretsRelativeToYAMLFile(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"conf/pw": "pw-from-file\n",
		"conf/p.yaml": strings.Replace(named("p1"), "group: g}", "group: g, tls: {enabled: true, caFile: ca.pem},\n"+
			"      sasl: {mechanism: PLAIN, username: u, password: \"${file:pw}\"}}", 1),
	})
	ps, err := LoadPaths(filepath.Join(dir, "conf"))
	if err != nil {
		t.Fatal(err)
	}
	k := ps[0].Spec.Source.Kafka
	if got := k.SASL.Password.Value(); got != "pw-from-file" {
		t.Errorf("password = %q", got)
	}
	if want := filepath.Join(dir, "conf", "ca.pem"); k.TLS.CAFile != want {
		t.Errorf("caFile = %q, want %q", k.TLS.CAFile, want)
	}
}

// TestSecretNeverPrinted renders a loaded pipeline, its secrets and load
// errors every way a program might, and looks for the secret values.
func TestSecretNeverPrinted(t *testing.T) {
	const (
		envValue     = "s3cr3t-from-env"
		fileValue    = "s3cr3t-from-file"
		literalValue = "s3cr3t-literal"
	)
	dir := writeFiles(t, map[string]string{"pw": fileValue + "\n"})
	t.Setenv("SLUICE_TEST_TOKEN", envValue)
	doc := header + `  source:
    kafka:
      brokers: ["k:9092"]
      topics: [t]
      group: g
      sasl: {mechanism: PLAIN, username: u, password: "${file:pw}"}
  function:
    url: "http://f/"
    headers: {Authorization: "${env:SLUICE_TEST_TOKEN}", X-Literal: ` + literalValue + `}
  results:
    onSuccess: [{webhook: {url: "http://w/", secret: ` + literalValue + `}}]
`
	name := filepath.Join(dir, "p.yaml")
	ps, err := Load(name, []byte(strings.Replace(doc, "secret: "+literalValue, "secret: whsec_c2VjcmV0LWtleQ==", 1)))
	if err != nil {
		t.Fatal(err)
	}
	p := ps[0]
	if p.Spec.Function.Headers["Authorization"].Value() != envValue || p.Spec.Source.Kafka.SASL.Password.Value() != fileValue ||
		p.Spec.Function.Headers["X-Literal"].Value() != literalValue {
		t.Fatalf("secrets not resolved: %q %q %q", p.Spec.Function.Headers["Authorization"].Value(),
			p.Spec.Source.Kafka.SASL.Password.Value(), p.Spec.Function.Headers["X-Literal"].Value())
	}

	// Load errors about the secrets' fields: the webhook secret is not a
	// Standard Webhooks key, and a header holds a line break.
	t.Setenv("SLUICE_TEST_TOKEN", envValue+"\nX-Injected: 1")
	_, loadErr := Load(name, []byte(doc))
	if loadErr == nil {
		t.Fatal("Load accepted an invalid webhook secret")
	}
	for _, want := range []string{"webhook.secret: not a Standard Webhooks key", "headers.Authorization: header value contains a line break or NUL"} {
		if !strings.Contains(loadErr.Error(), want) {
			t.Errorf("load errors lack %q:\n%v", want, loadErr)
		}
	}

	var rendered []string
	add := func(what string, s string) { rendered = append(rendered, what+": "+s) }
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s", "%T"} {
		for what, v := range map[string]any{
			"pipeline": p, "pipeline value": *p, "spec": p.Spec, "function": *p.Spec.Function,
			"headers": p.Spec.Function.Headers, "sasl": *p.Spec.Source.Kafka.SASL,
			"secret": p.Spec.Source.Kafka.SASL.Password, "secret pointer": &p.Spec.Source.Kafka.SASL.Password,
			"literal": p.Spec.Function.Headers["X-Literal"],
		} {
			add(what+" "+verb, fmt.Sprintf(verb, v))
		}
	}
	add("load error", loadErr.Error())
	add("load error %+v", fmt.Sprintf("%+v", loadErr))
	j, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	add("json", string(j))
	y, err := yaml.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	add("yaml", string(y))
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		slog.New(h(&b)).Info("loaded", "pipeline", p, "secret", p.Spec.Source.Kafka.SASL.Password, "headers", p.Spec.Function.Headers)
		add("slog", b.String())
	}

	for _, r := range rendered {
		for _, secret := range []string{envValue, fileValue, literalValue} {
			for _, form := range []string{secret, hex.EncodeToString([]byte(secret)), strings.ToUpper(hex.EncodeToString([]byte(secret)))} {
				if strings.Contains(r, form) {
					t.Errorf("secret %q leaked in %s", secret, r)
				}
			}
		}
	}
	// References are shown, literals are redacted.
	for _, want := range []string{`"Authorization":"${env:SLUICE_TEST_TOKEN}"`, `"password":"${file:pw}"`, `"X-Literal":"[redacted]"`} {
		if !strings.Contains(string(j), want) {
			t.Errorf("JSON lacks %s: %s", want, j)
		}
	}
	if !strings.Contains(string(y), "password: ${file:pw}") {
		t.Errorf("YAML lacks the password reference:\n%s", y)
	}
	if got := fmt.Sprintf("%#v", p.Spec.Source.Kafka.SASL.Password); got != `pipelines.Secret{Ref: "${file:pw}"}` {
		t.Errorf("%%#v = %s", got)
	}
	if got := fmt.Sprint(Secret{}); got != "" {
		t.Errorf("zero Secret prints %q", got)
	}
}
