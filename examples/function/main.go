// Command function is an example CloudEvents function for Sluice's
// quickstart, end-to-end tests and benchmarks. It accepts events over HTTP
// in binary, structured and batch mode, logs one JSON line per event to
// stderr, and answers each with a result event:
//
//	type    = <input type>.result
//	source  = sluice-example-function
//	subject = the input's; traceparent/tracestate kept
//	data    = {"processed": <input data>, "by": "example"}
//
// Flags inject the behaviours the tests need: random transient failures
// (-fail-rate), permanent poison events (-poison-prefix), service time
// (-latency), an overload simulator (-capacity, -capacity-schedule), a
// ledger of answered ids (-ledger), per-key order checking (-check-order,
// see GET /stats) and a no-op mode for benchmarks (-noop).
//
// Usage:
//
//	go run ./examples/function -addr 127.0.0.1:8080 [flags]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "function:", err)
		os.Exit(1)
	}
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("function", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      config
		addr     = fs.String("addr", "127.0.0.1:8080", "listen address (port 0 picks one; the address is logged)")
		schedule = fs.String("capacity-schedule", "", `capacity over time since start, e.g. "0s:32,20s:16,40s:64" (overrides -capacity from the first step on)`)
		ledger   = fs.String("ledger", "", "append the id of every event answered 2xx to this file, one per line, written before the answer")
		quiet    = fs.Bool("quiet", false, "do not log one line per event")
	)
	fs.Float64Var(&cfg.FailRate, "fail-rate", 0, "fraction of calls answered 503 (transient), drawn at random")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the -fail-rate draws")
	fs.StringVar(&cfg.PoisonPrefix, "poison-prefix", "", `events whose id or data "id" starts with this are answered 400 (permanent)`)
	fs.DurationVar(&cfg.Latency, "latency", 0, "service time of each call")
	fs.IntVar(&cfg.Capacity, "capacity", 0, "calls in flight beyond this are answered -overload-status (0 = unlimited)")
	fs.IntVar(&cfg.OverloadStatus, "overload-status", http.StatusTooManyRequests, "status of overload answers")
	fs.DurationVar(&cfg.RetryAfter, "retry-after", time.Second, "Retry-After of overload answers (0 = none)")
	fs.BoolVar(&cfg.CheckOrder, "check-order", false, `count per-key order violations of data {"key":..,"seq":N} (GET /stats)`)
	fs.BoolVar(&cfg.Noop, "noop", false, "answer 200 with no body and do nothing else (benchmarks)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if cfg.Schedule, err = parseSchedule(*schedule); err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stderr, nil))
	if !*quiet {
		cfg.Log = logger
	}
	if *ledger != "" {
		// Unbuffered appends: every line is in the OS before the answer
		// leaves, so it survives this process being killed.
		f, err := os.OpenFile(*ledger, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
		defer f.Close()
		cfg.Ledger = f
	}
	h, err := newHandler(cfg)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	logger.Info("listening", "addr", l.Addr().String())

	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
