// Package rmqlog routes the RocketMQ Go client's logging (package rlog) to
// log/slog.
//
// The client keeps one logger for the whole process (rlog.SetLogger sets a
// package variable), logs at Info level for routine events (every
// rebalance, every offset persisted) and, by default, writes through logrus
// to standard error. Install replaces it once per process; the RocketMQ
// source and sink call it from their constructors, so whichever is built
// first decides the destination. That is library state shared by every
// RocketMQ client in the process, which is why it lives here and nowhere
// else.
package rmqlog

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/apache/rocketmq-client-go/v2/rlog"
)

// installed guards the one rlog.SetLogger call: the logger it replaces is
// process-wide, so it is set once per process.
var installed sync.Once

// Install routes the client's logs to logger (nil: discarded) the first
// time it is called; later calls do nothing. Levels are lowered by one
// step: the client's Info is chatty (Debug here), its Warning becomes Info
// (pull errors while a broker is down repeat every few seconds per queue;
// the source reports the outage itself, at Warn, through its health) or
// Debug for the warnings the source causes by design, and
// Error and Fatal become Warn (the adapter never exits the process, unlike
// the client's default logger on Fatal).
func Install(logger *slog.Logger) {
	installed.Do(func() {
		if logger == nil {
			logger = slog.New(slog.DiscardHandler)
		}
		rlog.SetLogger(adapter{logger.With("component", "rocketmq-client")})
	})
}

// adapter implements rlog.Logger on top of slog. It is immutable and safe
// for concurrent use.
type adapter struct{ l *slog.Logger }

var _ rlog.Logger = adapter{}

func (a adapter) Debug(msg string, fields map[string]interface{}) {
	a.log(slog.LevelDebug, msg, fields)
}
func (a adapter) Info(msg string, fields map[string]interface{}) {
	a.log(slog.LevelDebug, msg, fields)
}
func (a adapter) Warning(msg string, fields map[string]interface{}) {
	level := slog.LevelInfo
	if expectedWarning(msg) {
		level = slog.LevelDebug
	}
	a.log(level, msg, fields)
}

// expectedWarning reports the warnings the RocketMQ source causes by
// design: its consume callbacks outlive revoked and closed queues (the
// client then ignores their results), and its pull window is the client's
// flow control.
func expectedWarning(msg string) bool {
	switch msg {
	case "processQueue is dropped without process consume result.",
		"the queue's messages span too long, so do flow control",
		"the cached message count exceeds the threshold, so do flow control",
		"the cached message size exceeds the threshold, so do flow control",
		"the message queue not be able to consume, because it was dropped",
		"push consumer quit pullMessage for dropped queue.":
		return true
	}
	return false
}

func (a adapter) Error(msg string, fields map[string]interface{}) {
	a.log(slog.LevelWarn, msg, fields)
}
func (a adapter) Fatal(msg string, fields map[string]interface{}) {
	a.log(slog.LevelWarn, msg, fields)
}

// Level and OutputPath are the client's own knobs; levels and destination
// are slog's business here.
func (adapter) Level(string)            {}
func (adapter) OutputPath(string) error { return nil }

func (a adapter) log(level slog.Level, msg string, fields map[string]interface{}) {
	ctx := context.Background()
	if !a.l.Enabled(ctx, level) {
		return
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		v := fields[k]
		if err, ok := v.(error); ok {
			v = err.Error()
		} else if s, ok := v.(fmt.Stringer); ok {
			v = s.String()
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	a.l.LogAttrs(ctx, level, msg, attrs...)
}
