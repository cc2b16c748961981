package bus

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/runtime/tenancy"
)

// twoTenants has a bus "orders" for each of acme and beta, and a bus
// "solo" for acme only.
func twoTenants(url string) string {
	var b strings.Builder
	for _, d := range []struct{ name, tenant string }{{"orders", "acme"}, {"orders", "beta"}, {"solo", "acme"}} {
		fmt.Fprintf(&b, `---
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: %s, tenant: %s}
spec:
  rules:
  - name: r
    targets:
    - sink: {webhook: {url: %q}}
`, d.name, d.tenant, url)
	}
	return b.String()
}

type apiCase struct {
	name    string
	path    string
	headers map[string]string
	body    string
	want    int
}

func (c apiCase) do(t *testing.T, base string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("content type %q", resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, string(b)
}

func binaryHeaders(id string, extra ...string) map[string]string {
	h := map[string]string{"ce-specversion": "1.0", "ce-id": id, "ce-source": "/test", "ce-type": "com.test", "content-type": "application/json"}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = extra[i+1]
	}
	return h
}

func TestIngressAPI(t *testing.T) {
	x := newEndpoint(t)
	h := start(t, "", twoTenants(x.URL()))
	structured := `{"specversion":"1.0","id":"structured","source":"/test","type":"com.test","data":{"a":1}}`
	big := httptest.NewServer(h.set.Handler(HandlerOptions{MaxBodyBytes: 4 << 20}))
	defer big.Close()
	batch := `[{"specversion":"1.0","id":"batch-1","source":"/test","type":"com.test"},{"specversion":"1.0","id":"batch-2","source":"/test","type":"com.test","data":"x"}]`
	for _, c := range []apiCase{
		{"binary", "/v1/buses/solo/events", binaryHeaders("binary"), `{"a":1}`, http.StatusAccepted},
		{"structured", "/v1/buses/solo/events", map[string]string{"content-type": "application/cloudevents+json"}, structured, http.StatusAccepted},
		{"batch", "/v1/buses/solo/events", map[string]string{"content-type": BatchContentType}, batch, http.StatusAccepted},
		{"tenant named", "/v1/buses/orders/events", binaryHeaders("for-beta", TenantHeader, "beta"), `{}`, http.StatusAccepted},
		{"ambiguous name", "/v1/buses/orders/events", binaryHeaders("which"), `{}`, http.StatusBadRequest},
		{"unknown bus", "/v1/buses/nope/events", binaryHeaders("nope"), `{}`, http.StatusNotFound},
		{"unknown tenant", "/v1/buses/solo/events", binaryHeaders("nope", TenantHeader, "beta"), `{}`, http.StatusNotFound},
		{"not a CloudEvent", "/v1/buses/solo/events", map[string]string{"content-type": "application/json"}, `{"a":1}`, http.StatusBadRequest},
		{"binary without id", "/v1/buses/solo/events", map[string]string{"ce-specversion": "1.0", "ce-source": "/s", "ce-type": "t"}, `{}`, http.StatusBadRequest},
		{"bad structured", "/v1/buses/solo/events", map[string]string{"content-type": "application/cloudevents+json"}, `{"id":`, http.StatusBadRequest},
		{"batch with an invalid event", "/v1/buses/solo/events", map[string]string{"content-type": BatchContentType}, `[{"specversion":"1.0","id":"ok","source":"/s","type":"t"},{"specversion":"1.0","source":"/s","type":"t"}]`, http.StatusBadRequest},
		{"empty batch", "/v1/buses/solo/events", map[string]string{"content-type": BatchContentType}, `[]`, http.StatusBadRequest},
		{"event too large for the queue", "/v1/buses/solo/events", binaryHeaders("huge"), `"` + strings.Repeat("x", 1<<20+10) + `"`, http.StatusRequestEntityTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := c.do(t, big.URL)
			if status != c.want {
				t.Fatalf("status %d %s, want %d", status, body, c.want)
			}
			var e apiError
			if status >= 400 && (json.Unmarshal([]byte(body), &e) != nil || e.Error == "") {
				t.Fatalf("error body %s", body)
			}
		})
	}
	eventually(t, "the accepted events", func() bool {
		return x.has([]string{"binary", "structured", "batch-1", "batch-2", "for-beta"})
	})
	if _, ok := x.get("which"); ok {
		t.Fatal("a refused event was delivered")
	}
	if n := h.rec.get("received acme/solo"); n != 4 {
		t.Errorf("received acme/solo = %d, want 4", n)
	}
	// The request body limit.
	small := httptest.NewServer(h.set.Handler(HandlerOptions{MaxBodyBytes: 1000}))
	defer small.Close()
	over := apiCase{path: "/v1/buses/solo/events", headers: binaryHeaders("big"), body: strings.Repeat("x", 2000)}
	if status, body := over.do(t, small.URL); status != http.StatusRequestEntityTooLarge {
		t.Fatalf("body over the limit: %d %s", status, body)
	}
}

func TestIngressAPIAuthenticatesTenants(t *testing.T) {
	x := newEndpoint(t)
	h := start(t, "", twoTenants(x.URL()))
	auth, err := tenancy.NewAuthenticator([]tenancy.Tenant{
		{Name: "acme", Keys: []tenancy.KeyHash{tenancy.HashKey("acme-key-000000001")}},
		{Name: "beta", Keys: []tenancy.KeyHash{tenancy.HashKey("beta-key-000000001")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.set.Handler(HandlerOptions{Auth: auth}))
	t.Cleanup(srv.Close)
	for _, c := range []apiCase{
		{"bearer key", "/v1/buses/orders/events", binaryHeaders("acme-1", "Authorization", "Bearer acme-key-000000001"), `{}`, http.StatusAccepted},
		{"api key header", "/v1/buses/orders/events", binaryHeaders("beta-1", APIKeyHeader, "beta-key-000000001"), `{}`, http.StatusAccepted},
		{"another tenant's bus", "/v1/buses/solo/events", binaryHeaders("beta-2", APIKeyHeader, "beta-key-000000001"), `{}`, http.StatusNotFound},
		{"tenant header does not override the key", "/v1/buses/solo/events", binaryHeaders("beta-3", APIKeyHeader, "beta-key-000000001", TenantHeader, "acme"), `{}`, http.StatusNotFound},
		{"no key", "/v1/buses/orders/events", binaryHeaders("anon"), `{}`, http.StatusUnauthorized},
		{"wrong key", "/v1/buses/orders/events", binaryHeaders("bad", "Authorization", "Bearer nope-nope-nope-nope"), `{}`, http.StatusUnauthorized},
	} {
		t.Run(c.name, func(t *testing.T) {
			if status, body := c.do(t, srv.URL); status != c.want {
				t.Fatalf("status %d %s, want %d", status, body, c.want)
			}
		})
	}
	eventually(t, "both tenants' events", func() bool { return x.has([]string{"acme-1", "beta-1"}) })
	if n := h.rec.get("received acme/orders") + h.rec.get("received beta/orders"); n != 2 {
		t.Fatalf("received %d events, want 2", n)
	}
	// The list shows a tenant its own buses only.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/buses", nil)
	req.Header.Set(APIKeyHeader, "beta-key-000000001")
	lresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var list []BusStatus
	_ = json.NewDecoder(lresp.Body).Decode(&list)
	lresp.Body.Close()
	if len(list) != 1 || list[0].ID != "beta/orders" || list[0].Storage != "embedded" || list[0].Rules[0].Targets[0].Pipeline != "beta/orders/r/0" {
		t.Fatalf("GET /v1/buses for beta: %d %+v", lresp.StatusCode, list)
	}
	// Replays are tenant-scoped too.
	resp, err := http.Post(srv.URL+"/v1/buses/orders/replays", "application/json", bytes.NewReader([]byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("replay without a key: %d", resp.StatusCode)
	}
}
