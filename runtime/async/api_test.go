package async

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/tasks"
	"github.com/sluicehq/sluice/runtime/tasks/boltstore"
	"github.com/sluicehq/sluice/runtime/tasks/storetest"
)

func TestInvokeRefusals(t *testing.T) {
	e := startEnv(t, nil, envOpts{})
	big := strings.Repeat("x", 2048)
	for _, tc := range []struct {
		name   string
		key    string
		fn     string
		body   string
		header http.Header
		status int
		code   string
	}{
		{"no key", "", "echo", "{}", nil, 401, CodeUnauthenticated},
		{"wrong key", "not-a-key-0123456789abcdef", "echo", "{}", nil, 401, CodeUnauthenticated},
		{"basic auth", "", "echo", "{}", http.Header{"Authorization": {"Basic " + keyAcme}}, 401, CodeUnauthenticated},
		{"unknown function", keyAcme, "nope", "{}", nil, 404, CodeNotFound},
		{"another tenant's function", keyBeta, "other", "{}", nil, 404, CodeNotFound},
		{"too large", keyAcme, "echo", `"` + big + `"`, nil, 413, CodeTooLarge},
		{"binary CloudEvent without type", keyAcme, "echo", "{}",
			http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {"1"}, "Ce-Source": {"/s"}}, 400, CodeInvalidEvent},
		{"structured CloudEvent, broken JSON", keyAcme, "echo", `{"specversion": "1.0",`,
			http.Header{"Content-Type": {"application/cloudevents+json"}}, 400, CodeInvalidEvent},
		{"structured CloudEvent without id", keyAcme, "echo", `{"specversion": "1.0", "type": "t", "source": "/s"}`,
			http.Header{"Content-Type": {"application/cloudevents+json"}}, 400, CodeInvalidEvent},
		{"batch", keyAcme, "echo", `[]`, http.Header{"Content-Type": {"application/cloudevents-batch+json"}}, 400, CodeInvalidEvent},
		{"reserved extension", keyAcme, "echo", "{}",
			http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {"1"}, "Ce-Source": {"/s"}, "Ce-Type": {"t"}, "Ce-Sluicefunction": {"x"}}, 400, CodeInvalidEvent},
		{"JSON body that is not JSON", keyAcme, "echo", `{"a":`, nil, 400, CodeInvalidEvent},
		{"bad content type", keyAcme, "echo", "x", http.Header{"Content-Type": {"text/plain; ==="}}, 400, CodeInvalidEvent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"Content-Type": {"application/json"}}
			for k, v := range tc.header {
				h[k] = v
			}
			var out apiError
			code, hdr := e.call(http.MethodPost, "/v1/functions/"+tc.fn+"/invocations", tc.key, []byte(tc.body), h, &out)
			if code != tc.status || out.Code != tc.code {
				t.Fatalf("got %d %+v, want %d %s", code, out, tc.status, tc.code)
			}
			if code == 401 && hdr.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	t.Run("too large, no Content-Length", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, e.api.URL+"/v1/functions/echo/invocations", io.NopCloser(strings.NewReader(`"`+big+`"`)))
		req.Header.Set("Authorization", "Bearer "+keyAcme)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if req.ContentLength != 0 || resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("chunked body: %d (content length %d)", resp.StatusCode, req.ContentLength)
		}
	})
	// Nothing was queued by any of them.
	var page ListResponse
	if code, _ := e.call(http.MethodGet, "/v1/tasks", keyAcme, nil, nil, &page); code != 200 || len(page.Tasks) != 0 {
		t.Fatalf("list after refusals: %d %+v", code, page)
	}
}

func TestInvokeEventForms(t *testing.T) {
	e := startEnv(t, nil, envOpts{})
	got := func(id string) (event map[string]any) {
		t.Helper()
		e.waitState(keyAcme, id, tasks.Succeeded)
		_, v := e.task(keyAcme, id)
		if err := json.Unmarshal(v.Event, &event); err != nil {
			t.Fatalf("event %s: %v", v.Event, err)
		}
		return event
	}

	// Plain body: wrapped into an event whose id is the task id.
	code, r := e.submit(keyAcme, "echo", `{"plain": true}`, nil)
	if code != 202 {
		t.Fatal(code)
	}
	ev := got(r.TaskID)
	if ev["id"] != r.TaskID || ev["type"] != InvocationType || ev["source"] != "/v1/functions/echo" || ev["datacontenttype"] != "application/json" {
		t.Fatalf("wrapped event %v", ev)
	}
	if e.fn.callsOf(r.TaskID) != 1 {
		t.Fatal("the function was not called with the task id as event id")
	}

	// Binary mode: the client's event, its id kept.
	code, r = e.submit(keyAcme, "echo", `{"bin": 1}`, http.Header{
		"Ce-Specversion": {"1.0"}, "Ce-Id": {"client-1"}, "Ce-Source": {"/client"}, "Ce-Type": {"com.example.bin"}, "Ce-Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
	})
	if code != 202 {
		t.Fatal(code)
	}
	ev = got(r.TaskID)
	if ev["id"] != "client-1" || ev["type"] != "com.example.bin" || ev["traceparent"] == nil {
		t.Fatalf("binary event %v", ev)
	}
	if e.fn.callsOf("client-1") != 1 {
		t.Fatal("function not called with the client's event id")
	}

	// Structured mode.
	code, r = e.submit(keyAcme, "echo", `{"specversion":"1.0","id":"client-2","source":"/client","type":"com.example.st","data":{"x":1}}`,
		http.Header{"Content-Type": {"application/cloudevents+json"}})
	if code != 202 {
		t.Fatal(code)
	}
	ev = got(r.TaskID)
	if ev["id"] != "client-2" || ev["type"] != "com.example.st" {
		t.Fatalf("structured event %v", ev)
	}
}

// TestDedupWindowPerFunction: each function holds its keys for its own
// dedupWindow, also one shorter than the store's (the longest).
func TestDedupWindowPerFunction(t *testing.T) {
	clock := storetest.NewClock(time.Now())
	store, err := boltstore.Open(filepath.Join(t.TempDir(), "tasks.db"), tasks.Options{Now: clock.Now, DedupWindow: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() }) // registered first, so it runs after the service stopped
	e := startEnv(t, nil, envOpts{store: store})
	key := http.Header{"Idempotency-Key": {"once"}}
	first := map[string]string{}
	for _, fn := range []string{"short", "echo"} { // dedupWindow 1m and the default 24h
		code, r := e.submit(keyAcme, fn, `{}`, key)
		if code != 202 {
			t.Fatalf("%s: %d", fn, code)
		}
		first[fn] = r.TaskID
	}
	clock.Advance(time.Minute - time.Microsecond)
	for _, fn := range []string{"short", "echo"} {
		if code, r := e.submit(keyAcme, fn, `{}`, key); code != 200 || r.TaskID != first[fn] {
			t.Fatalf("%s inside its window: %d %+v, want 200 with %s", fn, code, r, first[fn])
		}
	}
	clock.Advance(time.Microsecond)
	if code, r := e.submit(keyAcme, "short", `{}`, key); code != 202 || r.Duplicate || r.TaskID == first["short"] {
		t.Fatalf("short after its 1m window: %d %+v, want a new task", code, r)
	}
	if code, r := e.submit(keyAcme, "echo", `{}`, key); code != 200 || r.TaskID != first["echo"] {
		t.Fatalf("echo inside its 24h window: %d %+v, want 200 with %s", code, r, first["echo"])
	}
}

func TestDedup(t *testing.T) {
	e := startEnv(t, nil, envOpts{})
	key := http.Header{"Idempotency-Key": {"order-42"}}
	code, first := e.submit(keyAcme, "echo", `{}`, key)
	if code != 202 || first.Duplicate {
		t.Fatalf("first: %d %+v", code, first)
	}
	e.waitState(keyAcme, first.TaskID, tasks.Succeeded)
	code, again := e.submit(keyAcme, "echo", `{"different": "body"}`, key)
	if code != 200 || !again.Duplicate || again.TaskID != first.TaskID {
		t.Fatalf("repeat: %d %+v, want 200 duplicate of %s", code, again, first.TaskID)
	}
	// The key is scoped to the function and to the tenant.
	for _, tc := range []struct{ key, fn string }{{keyAcme, "other"}, {keyBeta, "echo"}} {
		code, r := e.submit(tc.key, tc.fn, `{}`, key)
		if code != 202 || r.Duplicate || r.TaskID == first.TaskID {
			t.Fatalf("%s: %d %+v", tc.fn, code, r)
		}
	}
	// A CloudEvent's source and id deduplicate without a key.
	ce := http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {"evt-1"}, "Ce-Source": {"/client"}, "Ce-Type": {"t"}}
	code, a := e.submit(keyAcme, "echo", `{}`, ce)
	if code != 202 {
		t.Fatal(code)
	}
	code, b := e.submit(keyAcme, "echo", `{}`, ce)
	if code != 200 || !b.Duplicate || b.TaskID != a.TaskID {
		t.Fatalf("CloudEvent repeat: %d %+v", code, b)
	}
	ce.Set("Ce-Source", "/elsewhere")
	code, c := e.submit(keyAcme, "echo", `{}`, ce)
	if code != 202 || c.TaskID == a.TaskID {
		t.Fatalf("same id, other source: %d %+v", code, c)
	}
	e.waitState(keyAcme, a.TaskID, tasks.Succeeded)
	e.waitState(keyAcme, c.TaskID, tasks.Succeeded)
	// Calls are counted by event id: a's and c's, never the duplicate b.
	if n := e.fn.callsOf("evt-1"); n != 2 {
		t.Fatalf("events with id evt-1 called %d times, want 2 (the duplicate must not run)", n)
	}
	// Duplicates are recorded (and listed) as such.
	var page ListResponse
	e.call(http.MethodGet, "/v1/tasks?state=duplicate", keyAcme, nil, nil, &page)
	if len(page.Tasks) != 2 {
		t.Fatalf("duplicate records: %+v", page.Tasks)
	}
	for _, d := range page.Tasks {
		if d.DuplicateOf != first.TaskID && d.DuplicateOf != a.TaskID {
			t.Fatalf("duplicate %+v", d)
		}
	}
}

func TestTenantIsolation(t *testing.T) {
	e := startEnv(t, nil, envOpts{})
	id := e.accept(keyAcme, "echo", `{}`)
	e.waitState(keyAcme, id, tasks.Succeeded)
	for _, tc := range []struct {
		method, path string
		body         string
	}{
		{http.MethodGet, "/v1/tasks/" + id, ""},
		{http.MethodPost, "/v1/tasks/" + id + ":cancel", "{}"},
		{http.MethodPost, "/v1/tasks/" + id + ":retry", "{}"},
		{http.MethodDelete, "/v1/tasks/" + id, ""},
		{http.MethodPost, "/v1/functions/other:pause", "{}"},
	} {
		var out apiError
		if code, _ := e.call(tc.method, tc.path, keyBeta, []byte(tc.body), nil, &out); code != 404 || out.Code != CodeNotFound {
			t.Errorf("beta %s %s: %d %+v, want 404", tc.method, tc.path, code, out)
		}
		if code, _ := e.call(tc.method, tc.path, "", []byte(tc.body), nil, &out); code != 401 {
			t.Errorf("no key %s %s: %d, want 401", tc.method, tc.path, code)
		}
	}
	var page ListResponse
	if code, _ := e.call(http.MethodGet, "/v1/tasks", keyBeta, nil, nil, &page); code != 200 || len(page.Tasks) != 0 {
		t.Fatalf("beta lists %d tasks: %+v", len(page.Tasks), page)
	}
	var br BatchResponse
	if code, _ := e.call(http.MethodPost, "/v1/tasks:batch", keyBeta, []byte(`{"op":"delete","filter":{}}`), nil, &br); code != 200 || br.Changed != 0 {
		t.Fatalf("beta batch delete: %d %+v", code, br)
	}
	if code, v := e.task(keyAcme, id); code != 200 || v.State != tasks.Succeeded {
		t.Fatalf("acme's task after beta's attempts: %d %+v", code, v)
	}
	if code, _ := e.call(http.MethodGet, "/v1/tasks", "", nil, nil, nil); code != 401 {
		t.Fatalf("list without a key: %d", code)
	}
}
