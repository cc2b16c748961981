// Package admin serves Sluice's operational HTTP API: /metrics, /healthz,
// /readyz and the pipeline status endpoints.
package admin

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"

	"github.com/sluicehq/sluice/runtime/engine"
	"github.com/sluicehq/sluice/runtime/metrics"
)

// PipelineStatus is one entry of GET /v1/pipelines.
type PipelineStatus struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Ready    bool   `json:"ready"`
	Error    string `json:"error,omitempty"`
	Source   string `json:"source"`
	Function string `json:"function"`
}

// Options select optional admin endpoints.
type Options struct {
	// Pprof serves net/http/pprof under /debug/pprof/ (off by default:
	// profiles expose internals and cost CPU while taken).
	Pprof bool
}

// Handler returns the admin API.
//
//	GET /metrics        Prometheus exposition
//	GET /healthz        200 while the process serves requests
//	GET /readyz         200 when every pipeline runs with a connected source, else 503 with reasons
//	GET /v1/pipelines   pipeline states as JSON
//	GET /debug/pprof/   profiles, with Options.Pprof
func Handler(r *engine.Runner, m *metrics.Registry, opts Options) http.Handler {
	mux := http.NewServeMux()
	if opts.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		notReady := r.Ready()
		if len(notReady) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "pipelines": notReady})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.HandleFunc("GET /v1/pipelines", func(w http.ResponseWriter, _ *http.Request) {
		out := []PipelineStatus{}
		for _, p := range r.Pipelines() {
			state, err := p.Status()
			st := PipelineStatus{ID: p.ID(), State: state, Source: p.SourceKind(), Function: p.FunctionURL()}
			if rerr := p.Ready(); rerr == nil {
				st.Ready = true
			} else {
				st.Error = rerr.Error()
			}
			if err != nil {
				st.Error = err.Error()
			}
			out = append(out, st)
		}
		writeJSON(w, http.StatusOK, out)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
