package async

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/runtime/tasks"
)

func TestSubmittedTaskRunsAndStoresItsResult(t *testing.T) {
	e := startEnv(t, nil, envOpts{})
	id := e.accept(keyAcme, "echo", `{"n": 1}`)
	v := e.waitState(keyAcme, id, tasks.Succeeded)
	if v.Attempts != 1 || v.Function != "echo" {
		t.Fatalf("task %+v", v)
	}
	var result struct {
		ID   string `json:"id"`
		Data struct {
			Echo         string `json:"echo"`
			SawTenantExt string `json:"sawTenantExt"`
		} `json:"data"`
	}
	if err := json.Unmarshal(v.Result, &result); err != nil {
		t.Fatalf("result %s: %v", v.Result, err)
	}
	if result.ID != "result-"+id || result.Data.Echo != `{"n": 1}` {
		t.Fatalf("result %s", v.Result)
	}
	if result.Data.SawTenantExt != "" {
		t.Fatal("the function saw Sluice's routing extension")
	}
	ts := v.Times
	for name, p := range map[string]any{"queued": ts.Queued, "dispatched": ts.Dispatched, "started": ts.Started, "finished": ts.Finished} {
		if p == nil || strings.Contains(mustJSON(t, p), "null") {
			t.Fatalf("stamp %s missing: %+v", name, ts)
		}
	}
	if ts.Received.After(*ts.Queued) || ts.Queued.After(*ts.Started) || ts.Started.After(*ts.Finished) {
		t.Fatalf("stamps out of order: %+v", ts)
	}
	if code, _ := e.task(keyAcme, id); code != http.StatusOK {
		t.Fatal(code)
	}
}
