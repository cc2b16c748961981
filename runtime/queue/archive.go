package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ArchiveSubjectSuffix follows Config.SubjectPrefix in the subjects of
// archives: archive a is stored under "<prefix>-archive.<a>", outside the
// queues' "<prefix>.>" so that the two streams never overlap.
const ArchiveSubjectSuffix = "-archive"

// Archive is an append-only log of messages kept for a retention period
// (the event bus's archive, replayed by time window). Unlike a queue, reading
// removes nothing: messages leave only when they are older than the
// retention. Each archive is a JetStream stream of its own (limits
// retention, MaxAge = retention) on the queue's server; see docs/bus.md.
//
// Concurrency: Append and Range may be called concurrently, also while
// Range runs. An Archive is valid until its JetStream queue is closed.
type Archive struct {
	q       *JetStream
	name    string
	stream  jetstream.Stream
	subject string
}

// archiveStream is the stream holding archive name. Stream names may not
// contain '.', and '~' cannot occur in a valid queue name, so the mapping
// is one to one.
func (q *JetStream) archiveStream(name string) string {
	return q.cfg.Stream + "_ARCHIVE_" + strings.ReplaceAll(name, ".", "~")
}

// OpenArchive creates the archive name (a valid queue name) with the given
// retention, or opens it and updates its retention: a shorter retention
// removes the messages now too old. Errors: ErrInvalidName, ErrClosed, a
// non-positive retention, or the server's refusal.
func (q *JetStream) OpenArchive(ctx context.Context, name string, retention time.Duration) (*Archive, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if retention <= 0 {
		return nil, fmt.Errorf("archive %s: retention %s must be positive", name, retention)
	}
	if err := q.checkOpen(); err != nil {
		return nil, err
	}
	subject := q.cfg.SubjectPrefix + ArchiveSubjectSuffix + "." + name
	stream, err := q.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        q.archiveStream(name),
		Description: "Sluice archive " + name,
		Subjects:    []string{subject},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      retention,
		// Old messages make room for new ones: an archive never refuses
		// an event because it is full of older ones.
		Discard:    jetstream.DiscardOld,
		MaxBytes:   -1,
		MaxMsgs:    -1,
		MaxMsgSize: q.cfg.MaxMessageBytes,
		// The server refuses a duplicate window longer than MaxAge.
		Duplicates:  min(q.cfg.DuplicateWindow, retention),
		Replicas:    q.cfg.Replicas,
		AllowDirect: true,
	})
	if err != nil {
		return nil, fmt.Errorf("archive %s: create stream: %w", name, err)
	}
	return &Archive{q: q, name: name, stream: stream, subject: subject}, nil
}

// Name is the archive's name.
func (a *Archive) Name() string { return a.name }

// Append durably stores one message, like Queue.Publish: msgID (when not
// empty) deduplicates within the duplicate window, and the errors are
// Publish's. The stored time (Stored.Time) is the server's clock at the
// write.
func (a *Archive) Append(ctx context.Context, msgID string, data []byte, headers map[string]string) (Receipt, error) {
	if err := a.q.checkOpen(); err != nil {
		return Receipt{}, err
	}
	msg := &nats.Msg{Subject: a.subject, Data: data, Header: make(nats.Header, len(headers)+1)}
	for k, v := range headers {
		msg.Header[k] = []string{v}
	}
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(a.q.archiveStream(a.name))}
	if msgID != "" {
		msg.Header[MsgIDHeader] = []string{msgID}
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := a.q.js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		return Receipt{}, a.q.publishError("archive "+a.name, err)
	}
	return Receipt{Seq: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// rangeBatch is how many archived messages one fetch of Range asks for.
const rangeBatch = 256

// Range calls fn, in store order, with every message stored at or after
// from and before to (by Stored.Time), as the archive was when Range
// started: messages appended meanwhile are not visited, so Range ends even
// while the archive grows. Messages that expire while Range runs may be
// skipped. fn must not keep the *Stored; its error stops Range and is
// returned as is. Other errors: ErrClosed, ctx's error, or the server's.
func (a *Archive) Range(ctx context.Context, from, to time.Time, fn func(*Stored) error) error {
	if err := a.q.checkOpen(); err != nil {
		return err
	}
	if !from.Before(to) {
		return nil
	}
	info, err := a.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("archive %s: %w", a.name, err)
	}
	st := info.State
	if st.Msgs == 0 || st.LastTime.Before(from) || !st.FirstTime.Before(to) {
		return nil
	}
	last := st.LastSeq
	start := from
	// An ordered consumer is ephemeral and reading through it changes
	// nothing; the server removes it after InactiveThreshold if the
	// deletion below fails.
	cons, err := a.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{a.subject},
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &start,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("archive %s: range: %w", a.name, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = a.stream.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	for {
		batch, err := cons.Fetch(rangeBatch, jetstream.FetchMaxWait(a.q.cfg.PollWait))
		if err != nil {
			return fmt.Errorf("archive %s: range: %w", a.name, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("archive %s: range: %w", a.name, err)
			}
			seq := md.Sequence.Stream
			if seq > last || !md.Timestamp.Before(to) {
				return nil
			}
			headers := flatten(m.Headers())
			if err := fn(&Stored{
				Queue: a.name, Seq: seq, MsgID: headers[MsgIDHeader], Headers: headers, Data: m.Data(), Time: md.Timestamp,
			}); err != nil {
				return err
			}
			if seq == last {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("archive %s: range: %w", a.name, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if n == 0 {
			// Nothing more before last: the rest expired meanwhile.
			return nil
		}
	}
}
