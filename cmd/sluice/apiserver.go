package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// apiServer serves the user-facing APIs on --api-addr: the invoke and task
// API (Function documents) and the bus API, apart from the admin listener.
// runPipelines owns it: it starts it once the runtimes serving it exist and
// shuts it down after they stopped.
type apiServer struct {
	srv  *http.Server
	done chan error // Serve's result
	log  *slog.Logger
}

// startAPI listens on addr and serves async's and the buses' routes (either
// may be nil). It returns nil, nil when addr is empty or there is nothing
// to serve; an error when addr cannot be listened on.
func startAPI(addr string, async *asyncRuntime, busAPI http.Handler, log *slog.Logger) (*apiServer, error) {
	if addr == "" || (async == nil && busAPI == nil) {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("API listener: %w", err)
	}
	mux := http.NewServeMux()
	if async != nil {
		async.routes(mux)
	}
	if busAPI != nil {
		busRoutes(mux, busAPI)
	}
	a := &apiServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, done: make(chan error, 1), log: log}
	go func() { a.done <- a.srv.Serve(ln) }()
	log.Info("API listening", "addr", "http://"+ln.Addr().String(), "invoke", async != nil, "buses", busAPI != nil)
	return a, nil
}

// shutdown stops the listener, letting requests in progress finish for a
// few seconds, and waits for Serve.
func (a *apiServer) shutdown() {
	if a == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = a.srv.Shutdown(ctx)
	if err := <-a.done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("API server", "err", err)
	}
}
