package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/queue/rocketq"
)

// rocketQueueScheme selects the task queue on RocketMQ (docs/queues.md,
// "RocketMQ").
const rocketQueueScheme = "rocketmq://"

// openRocketQueue opens --queue rocketmq://…; the caller owns the queue.
func openRocketQueue(ctx context.Context, raw string, log *slog.Logger) (queue.Queue, error) {
	cfg, err := parseRocketQueueURL(raw)
	if err != nil {
		return nil, err
	}
	q, err := rocketq.Open(ctx, cfg, log)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return q, nil
}

// parseRocketQueueURL reads --queue
// rocketmq://namesrv:port[;namesrv:port][?prefix=P&queues=N]: name servers
// separated by ';' (RocketMQ's own convention) or ','.
func parseRocketQueueURL(raw string) (rocketq.Config, error) {
	rest := strings.TrimPrefix(raw, rocketQueueScheme)
	hosts, query, _ := strings.Cut(rest, "?")
	var cfg rocketq.Config
	for _, h := range strings.FieldsFunc(hosts, func(r rune) bool { return r == ',' || r == ';' }) {
		if h = strings.TrimSpace(h); h != "" {
			cfg.NameServers = append(cfg.NameServers, h)
		}
	}
	if len(cfg.NameServers) == 0 {
		return cfg, fmt.Errorf("%q: no name server", raw)
	}
	params, err := url.ParseQuery(query)
	if err != nil {
		return cfg, fmt.Errorf("%q: %w", raw, err)
	}
	for k, v := range params {
		switch k {
		case "prefix":
			cfg.Prefix = v[0]
		case "queues":
			n, err := strconv.Atoi(v[0])
			if err != nil || n <= 0 || n > 1024 {
				return cfg, fmt.Errorf("%q: queues %q: want an integer from 1 to 1024", raw, v[0])
			}
			cfg.Queues = n
		default:
			return cfg, fmt.Errorf("%q: unknown parameter %q (want prefix or queues)", raw, k)
		}
	}
	return cfg, nil
}
