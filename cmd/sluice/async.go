package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/async"
	"github.com/sluicehq/sluice/runtime/engine"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/queue/kafkaq"
	"github.com/sluicehq/sluice/runtime/tasks"
	"github.com/sluicehq/sluice/runtime/tasks/boltstore"
	"github.com/sluicehq/sluice/runtime/tasks/pgstore"
)

// asyncFlags select where the asynchronous invocation service (Function
// documents; docs/async.md) keeps its tasks and serves its API.
type asyncFlags struct {
	dataDir      string
	taskStore    string
	taskSchema   string
	queueURL     string
	apiAddr      string
	instance     string
	workers      int
	syncAlways   bool
	queueAckWait time.Duration
}

func (f *asyncFlags) register(c *cobra.Command) {
	fs := c.Flags()
	fs.StringVar(&f.dataDir, "data-dir", "./.sluice-data", "directory of the embedded task queue and task store (Function documents)")
	fs.StringVar(&f.taskStore, "task-store", "", "task store: empty for the embedded store in --data-dir, or a postgres:// URL shared by several instances")
	fs.StringVar(&f.taskSchema, "task-store-schema", "", "PostgreSQL schema of the task store (default: the connection's search_path)")
	fs.StringVar(&f.queueURL, "queue", "", "task queue: empty for the embedded NATS JetStream in --data-dir, nats://host:port of a NATS cluster, kafka://host:port[,host:port][?prefix=P&partitions=N] of a Kafka cluster, rocketmq://namesrv:port[;namesrv:port][?prefix=P&queues=N] of a RocketMQ cluster, or amqp[s]://user:pass@host:port/vhost[?prefix=P&type=quorum|classic&cafile=F] of a RabbitMQ broker, shared by several instances")
	fs.StringVar(&f.apiAddr, "api-addr", "", "listen address of the invoke, task and bus APIs (default: served on --admin-addr; the bus API is served there too)")
	fs.StringVar(&f.instance, "instance", "", "this instance's name, stable across restarts (default: generated once and kept in --data-dir)")
	fs.IntVar(&f.workers, "workers", 256, "tasks in progress at once across all tenants, divided among them by weight")
	fs.BoolVar(&f.syncAlways, "queue-sync-always", false, "fsync every queued task before answering 202 (survives power loss; slower)")
	fs.DurationVar(&f.queueAckWait, "queue-ack-wait", queue.DefaultAckWait, "how long the tasks a crashed instance was running wait before they are dispatched again")
}

// asyncRuntime is the running service with the queue and store it owns.
type asyncRuntime struct {
	svc   *async.Service
	q     queue.Queue
	store tasks.Store
	log   *slog.Logger
	done  chan error // Run's result

	// ownAPI: the API is served on --api-addr (see startAPI), not on the
	// admin listener.
	ownAPI bool
}

// startAsync opens the task store and queue and runs the service when the
// configuration has functions; it returns nil otherwise.
func startAsync(ctx context.Context, cfg *pipelines.Config, f asyncFlags, deps engine.Deps, comps engine.Components) (*asyncRuntime, error) {
	if len(cfg.Functions) == 0 {
		return nil, nil
	}
	log := deps.Log
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	instance := f.instance
	if instance == "" {
		var err error
		if instance, err = instanceID(f.dataDir); err != nil {
			return nil, err
		}
	}
	a := &asyncRuntime{log: log}
	// The store holds idempotency keys for one window: the longest any
	// function asks for.
	opts := tasks.Options{Logger: log}
	for _, fn := range cfg.Functions {
		opts.DedupWindow = max(opts.DedupWindow, fn.Spec.DedupWindow.D())
	}
	var err error
	switch {
	case f.taskStore == "":
		a.store, err = boltstore.Open(filepath.Join(f.dataDir, "tasks.db"), opts)
	case strings.HasPrefix(f.taskStore, "postgres://"), strings.HasPrefix(f.taskStore, "postgresql://"):
		a.store, err = pgstore.Open(ctx, pgstore.Config{URL: f.taskStore, Schema: f.taskSchema, Options: opts})
	default:
		err = errors.New("want a postgres:// URL or nothing")
	}
	if err != nil {
		return nil, fmt.Errorf("--task-store: %w", err)
	}
	qcfg := queue.Config{AckWait: f.queueAckWait}
	switch {
	case f.queueURL == "":
		a.q, err = queue.OpenEmbedded(ctx, queue.EmbeddedConfig{Config: qcfg, DataDir: filepath.Join(f.dataDir, "queue"), SyncAlways: f.syncAlways}, log)
	case strings.HasPrefix(f.queueURL, "kafka://"):
		var kcfg kafkaq.Config
		if kcfg, err = parseKafkaQueueURL(f.queueURL); err == nil {
			a.q, err = kafkaq.Open(ctx, kcfg, log)
		}
	case strings.HasPrefix(f.queueURL, rocketQueueScheme):
		a.q, err = openRocketQueue(ctx, f.queueURL, log)
	case isRabbitQueueURL(f.queueURL):
		a.q, err = openRabbitQueue(ctx, f.queueURL, log)
	default:
		a.q, err = queue.OpenNATS(ctx, f.queueURL, qcfg, log)
	}
	if err != nil {
		_ = a.store.Close()
		return nil, fmt.Errorf("--queue: %w", err)
	}
	a.svc, err = async.New(async.Config{
		Tenants: cfg.Tenants, Functions: cfg.Functions, Store: a.store, Queue: a.q,
		SharedQueue: f.queueURL != "", Instance: instance, StateDir: f.dataDir,
		Metrics: deps.Metrics, Limiters: deps.Limiters, Log: log, Stdout: deps.Stdout, Components: &comps,
		Workers: f.workers, DrainTimeout: deps.DrainTimeout,
	})
	if err != nil {
		a.closeStorage()
		return nil, err
	}
	a.ownAPI = f.apiAddr != ""
	a.done = make(chan error, 1)
	go func() { a.done <- a.svc.Run(ctx) }()
	store, q := "embedded", "embedded"
	if f.taskStore != "" {
		store = "postgres"
	}
	if f.queueURL != "" {
		q = "nats"
	}
	if strings.HasPrefix(f.queueURL, "kafka://") {
		q = "kafka"
	}
	if strings.HasPrefix(f.queueURL, rocketQueueScheme) {
		q = "rocketmq"
	}
	if isRabbitQueueURL(f.queueURL) {
		q = "rabbitmq"
	}
	log.Info("async service started", "functions", len(cfg.Functions), "tenants", len(cfg.Tenants),
		"instance", instance, "data_dir", f.dataDir, "task_store", store, "queue", q)
	return a, nil
}

// mount serves the async API beside the admin API on one listener, unless
// it has a listener of its own.
func (a *asyncRuntime) mount(adminAPI http.Handler) http.Handler {
	if a == nil || a.ownAPI {
		return adminAPI
	}
	mux := http.NewServeMux()
	a.routes(mux)
	mux.Handle("/", adminAPI)
	return mux
}

// routes registers the invoke and task API on mux.
func (a *asyncRuntime) routes(mux *http.ServeMux) {
	api := a.svc.Handler()
	for _, p := range []string{"/v1/functions/", "/v1/tasks", "/v1/tasks/", "/v1/tasks:batch"} {
		mux.Handle(p, api)
	}
}

// wait returns once the service stopped (its context ended and it
// drained).
func (a *asyncRuntime) wait() error {
	if a == nil {
		return nil
	}
	return <-a.done
}

// close closes the queue and the store, after wait.
func (a *asyncRuntime) close() {
	if a != nil {
		a.closeStorage()
	}
}

func (a *asyncRuntime) closeStorage() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.q.Close(ctx); err != nil {
		a.log.Error("closing the task queue", "err", err)
	}
	if err := a.store.Close(); err != nil {
		a.log.Error("closing the task store", "err", err)
	}
}

// instanceID reads this instance's name from the data directory, creating
// it on first start.
func instanceID(dir string) (string, error) {
	path := filepath.Join(dir, "instance-id")
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("instance id: %w", err)
	}
	id := uuid.NewString()
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("instance id: %w", err)
	}
	return id, nil
}

// parseKafkaQueueURL reads --queue kafka://host:port[,host:port][?prefix=P&partitions=N]
// (docs/queues.md, "Kafka").
func parseKafkaQueueURL(raw string) (kafkaq.Config, error) {
	rest := strings.TrimPrefix(raw, "kafka://")
	hosts, query, _ := strings.Cut(rest, "?")
	var cfg kafkaq.Config
	for _, h := range strings.Split(hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			cfg.Brokers = append(cfg.Brokers, h)
		}
	}
	if len(cfg.Brokers) == 0 {
		return cfg, fmt.Errorf("%q: no broker", raw)
	}
	params, err := url.ParseQuery(query)
	if err != nil {
		return cfg, fmt.Errorf("%q: %w", raw, err)
	}
	for k, v := range params {
		switch k {
		case "prefix":
			cfg.Prefix = v[0]
		case "partitions":
			n, err := strconv.ParseInt(v[0], 10, 32)
			if err != nil || n <= 0 {
				return cfg, fmt.Errorf("%q: partitions %q: want a positive integer", raw, v[0])
			}
			cfg.Partitions = int32(n)
		default:
			return cfg, fmt.Errorf("%q: unknown parameter %q (want prefix or partitions)", raw, k)
		}
	}
	return cfg, nil
}
