package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/engine"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/tenancy"
	"github.com/sluicehq/sluice/sinks/bus"
	"github.com/sluicehq/sluice/sinks/bus/pattern"
)

// Where the buses keep their events (docs/bus.md): a JetStream stream of
// their own, apart from the task queues, so that a full task queue never
// stops a bus (and the other way round).
const (
	busStream        = "SLUICE_BUS"
	busSubjectPrefix = "sluicebus"
)

// checkPattern validates bus event patterns for the loader, placing each
// problem at its node.
func checkPattern(raw any) error {
	_, err := pattern.Parse(raw)
	var es pattern.Errors
	if !errors.As(err, &es) {
		return err
	}
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = &pipelines.PatternError{Segments: e.Segments, Msg: e.Msg}
	}
	return errors.Join(out...)
}

// busRuntime is the running buses with the queue they own.
type busRuntime struct {
	set  *bus.Set
	q    queue.Queue
	log  *slog.Logger
	done chan error // Run's result
}

// startBuses opens the buses' queue (embedded in --data-dir/bus, or the
// --queue NATS cluster) and runs every bus; it returns nil when the
// configuration has none. comps are the pipelines' components: bus
// targets build their sinks from them.
func startBuses(ctx context.Context, cfg *pipelines.Config, f asyncFlags, deps engine.Deps, reg *metrics.Registry, comps engine.Components) (*busRuntime, error) {
	if len(cfg.Buses) == 0 {
		return nil, nil
	}
	log := deps.Log
	qcfg := queue.Config{Stream: busStream, SubjectPrefix: busSubjectPrefix, AckWait: f.queueAckWait}
	var q bus.Queue
	var err error
	if f.queueURL == "" {
		dir := filepath.Join(f.dataDir, "bus")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("--data-dir: %w", err)
		}
		q, err = queue.OpenEmbedded(ctx, queue.EmbeddedConfig{Config: qcfg, DataDir: dir, SyncAlways: f.syncAlways}, log.With("component", "bus-queue"))
	} else {
		q, err = queue.OpenNATS(ctx, f.queueURL, qcfg, log.With("component", "bus-queue"))
	}
	if err != nil {
		return nil, fmt.Errorf("bus queue: %w", err)
	}
	set, err := bus.New(ctx, cfg.Buses, bus.Deps{Queue: q, Engine: deps, Components: comps, Recorder: reg.Buses()})
	if err != nil {
		_ = q.Close(context.Background())
		return nil, err
	}
	b := &busRuntime{set: set, q: q, log: log, done: make(chan error, 1)}
	go func() { b.done <- set.Run(ctx) }()
	log.Info("buses started", "buses", len(cfg.Buses))
	return b, nil
}

// components adds the "bus" route kind to comps.
func (b *busRuntime) components(comps engine.Components) engine.Components {
	if b == nil {
		return comps
	}
	return b.set.Components(comps)
}

// api is the bus API (/v1/buses/...), with the tenants' API keys when the
// configuration has tenants; nil without buses.
func (b *busRuntime) api(tenants []*pipelines.Tenant) (http.Handler, error) {
	if b == nil {
		return nil, nil
	}
	var opts bus.HandlerOptions
	if len(tenants) > 0 {
		ts := make([]tenancy.Tenant, 0, len(tenants))
		for _, t := range tenants {
			tt := tenancy.Tenant{Name: t.Metadata.Name}
			for _, k := range t.Spec.APIKeys {
				tt.Keys = append(tt.Keys, tenancy.HashKey(k.Value()))
			}
			ts = append(ts, tt)
		}
		auth, err := tenancy.NewAuthenticator(ts)
		if err != nil {
			return nil, err
		}
		opts.Auth = auth
	}
	return b.set.Handler(opts), nil
}

// busRoutes registers the bus API on mux.
func busRoutes(mux *http.ServeMux, api http.Handler) {
	mux.Handle("/v1/buses", api)
	mux.Handle("/v1/buses/", api)
}

// mount serves the bus API (from api) beside next on the admin listener.
func (b *busRuntime) mount(next, api http.Handler) http.Handler {
	if b == nil {
		return next
	}
	mux := http.NewServeMux()
	busRoutes(mux, api)
	// /readyz also waits for every bus dispatcher and target to run with
	// a connected source.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if notReady := b.set.Ready(); len(notReady) > 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]any{"status": "not ready", "buses": notReady})
			return
		}
		next.ServeHTTP(w, r)
	})
	mux.Handle("/", next)
	return mux
}

// wait returns once every bus stopped (its context ended and it drained).
func (b *busRuntime) wait() error {
	if b == nil {
		return nil
	}
	return <-b.done
}

// close releases the buses and their queue, after wait.
func (b *busRuntime) close() {
	if b == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.set.Close(ctx); err != nil {
		b.log.Error("closing the buses", "err", err)
	}
	if err := b.q.Close(ctx); err != nil {
		b.log.Error("closing the bus queue", "err", err)
	}
}
