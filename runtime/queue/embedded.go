package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedConfig configures the in-process NATS JetStream server.
type EmbeddedConfig struct {
	Config
	// DataDir holds the JetStream file store (created if missing). Required.
	DataDir string
	// SyncAlways makes the server fsync every write before acknowledging it,
	// so that an acknowledged Publish also survives an operating-system crash
	// or power loss. Without it an acknowledged Publish survives the Sluice
	// process being killed (the write reached the kernel before the
	// acknowledgement) and the kernel syncs within SyncInterval. It costs
	// publish throughput: see docs/queues.md, "Sync policy".
	SyncAlways bool
	// SyncInterval is the periodic fsync interval when SyncAlways is off.
	// Zero means the server's default (2 minutes).
	SyncInterval time.Duration
	// Listen, when set ("127.0.0.1:4222"; port 0 picks a free one), also
	// serves NATS clients on that address, e.g. other Sluice instances using
	// OpenNATS. Empty means in-process only: no network port is opened.
	Listen string
	// StartTimeout bounds the server's start-up. Default 30s.
	StartTimeout time.Duration
}

// Embedded is a Queue backed by a NATS server running in this process. Close
// stops the server.
type Embedded struct {
	*JetStream
	srv *server.Server
}

var _ Queue = (*Embedded)(nil)

// OpenEmbedded starts the embedded server on cfg.DataDir (recovering what a
// previous run stored there), connects to it in-process and creates the
// stream. Errors are configuration problems (data dir, listen address) or
// ctx's error.
func OpenEmbedded(ctx context.Context, cfg EmbeddedConfig, log *slog.Logger) (*Embedded, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("queue: embedded: DataDir is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	maxMsg := cfg.MaxMessageBytes
	if maxMsg == 0 {
		maxMsg = DefaultMaxMessageBytes
	}
	opts := &server.Options{
		ServerName:             "sluice-embedded",
		JetStream:              true,
		StoreDir:               cfg.DataDir,
		SyncAlways:             cfg.SyncAlways,
		SyncInterval:           cfg.SyncInterval,
		MaxPayload:             maxMsg,
		DontListen:             cfg.Listen == "",
		NoSigs:                 true, // signals belong to the Sluice process
		DisableJetStreamBanner: true,
		NoSystemAccount:        true,
	}
	if cfg.MaxBytes > 0 {
		opts.JetStreamMaxStore = cfg.MaxBytes
	}
	if cfg.Listen != "" {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("queue: embedded: listen %q: %w", cfg.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("queue: embedded: listen %q: bad port", cfg.Listen)
		}
		if p == 0 {
			p = server.RANDOM_PORT // the server reads 0 as its default port 4222
		}
		opts.Host, opts.Port = host, p
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("queue: embedded server: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log.With("component", "nats")}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(cfg.StartTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("queue: embedded server not ready within %s (data dir %s)", cfg.StartTimeout, cfg.DataDir)
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv), nats.Name("sluice"),
		// In-process: there is nothing to reconnect to once the server stops.
		nats.NoReconnect())
	if err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("queue: connect to embedded server: %w", err)
	}
	q, err := newJetStream(ctx, nc, cfg.Config, log)
	if err != nil {
		nc.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, err
	}
	return &Embedded{JetStream: q, srv: srv}, nil
}

// ClientURL is the address external NATS clients use ("" when Listen was
// empty).
func (e *Embedded) ClientURL() string {
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// Close closes the connection, then stops the server and waits for it; the
// store is flushed on the way down. Idempotent.
func (e *Embedded) Close(ctx context.Context) error {
	err := e.JetStream.Close(ctx)
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	return err
}

// natsLogger forwards the server's log to slog. Notices (start-up chatter)
// go to debug; the server's "fatal" errors are logged as errors because the
// embedded server must never exit the process.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
