package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/queue/rabbitq"
)

// isRabbitQueueURL reports whether --queue selects the task queue on
// RabbitMQ (docs/queues.md, "RabbitMQ").
func isRabbitQueueURL(raw string) bool {
	return strings.HasPrefix(raw, "amqp://") || strings.HasPrefix(raw, "amqps://")
}

// openRabbitQueue opens --queue amqp://… or amqps://…; the caller owns the
// queue.
func openRabbitQueue(ctx context.Context, raw string, log *slog.Logger) (queue.Queue, error) {
	cfg, err := parseRabbitQueueURL(raw)
	if err != nil {
		return nil, err
	}
	q, err := rabbitq.Open(ctx, cfg, log)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return q, nil
}

// parseRabbitQueueURL reads --queue
// amqp[s]://user:pass@host:port/vhost[?prefix=P&type=quorum|classic&cafile=F]:
// Sluice's parameters are taken off, the rest of the URL (and any other
// parameter, such as heartbeat) goes to the AMQP client. Errors never
// quote the URL: it may hold a password.
func parseRabbitQueueURL(raw string) (rabbitq.Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return rabbitq.Config{}, fmt.Errorf("not a valid amqp:// or amqps:// URL")
	}
	var cfg rabbitq.Config
	params := u.Query()
	for k, v := range params {
		switch k {
		case "prefix":
			cfg.Prefix = v[0]
		case "type":
			if v[0] != pipelines.RabbitQueueQuorum && v[0] != pipelines.RabbitQueueClassic {
				return cfg, fmt.Errorf("type %q: want quorum or classic", v[0])
			}
			cfg.QueueType = v[0]
		case "cafile":
			cfg.TLS = &pipelines.TLSSpec{Enabled: true, CAFile: v[0]}
		default:
			continue
		}
		params.Del(k)
	}
	if u.Host == "" {
		return cfg, fmt.Errorf("no broker host")
	}
	u.RawQuery = params.Encode()
	cfg.URL = u.String()
	return cfg, nil
}
