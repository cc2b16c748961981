package log

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/internal/cetest"
)

func TestJSONLines(t *testing.T) {
	var out bytes.Buffer
	s := New(&out, FormatJSON)
	in := []cloudevents.Event{cetest.Full(t, "a"), cetest.New(t, "b", "hello"), cetest.New(t, "c", nil)}
	if err := s.Write(context.Background(), in); err != nil {
		t.Fatalf("Write: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(in) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(in), out.String())
	}
	for i, l := range lines {
		var got cloudevents.Event
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("line %d is not a structured CloudEvent: %v\n%s", i, err, l)
		}
		cetest.Equal(t, in[i], got)
	}
}

func TestTextLines(t *testing.T) {
	long := cetest.New(t, "long", strings.Repeat("é", 100))
	spaced := cetest.New(t, "id with space", 1)
	spaced.SetSubject("sub\nject")
	cases := []struct {
		e    cloudevents.Event
		want string
	}{
		{cetest.New(t, "a", map[string]int{"n": 1}), `a dev.sluice.test /sluice/cetest - "{\"n\":1}"`},
		{func() cloudevents.Event { e := cetest.New(t, "b", nil); e.SetSubject("orders/1"); return e }(),
			`b dev.sluice.test /sluice/cetest orders/1 ""`},
		{spaced, `"id with space" dev.sluice.test /sluice/cetest "sub\nject" "1"`},
		{long, `long dev.sluice.test /sluice/cetest - "\"` + strings.Repeat("é", 39) + `"…`},
	}
	for _, tc := range cases {
		var out bytes.Buffer
		if err := New(&out, FormatText).Write(context.Background(), []cloudevents.Event{tc.e}); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if got := strings.TrimSuffix(out.String(), "\n"); got != tc.want {
			t.Errorf("line = %s\nwant   %s", got, tc.want)
		}
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestErrors(t *testing.T) {
	s := New(failingWriter{}, FormatText)
	if err := s.Write(context.Background(), []cloudevents.Event{cetest.New(t, "a", 1)}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Write to a failing writer = %v, want its error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := New(&bytes.Buffer{}, FormatJSON).Write(ctx, []cloudevents.Event{cetest.New(t, "a", 1)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write with a cancelled ctx = %v", err)
	}
	var out bytes.Buffer
	s = New(&out, FormatJSON)
	for range 2 {
		if err := s.Close(context.Background()); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if err := s.Write(context.Background(), []cloudevents.Event{cetest.New(t, "a", 1)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close = %v, want ErrClosed", err)
	}
	if out.Len() != 0 {
		t.Fatalf("closed sink wrote %q", out.String())
	}
}

// TestConcurrentWritesDoNotInterleave: every line is a whole event.
func TestConcurrentWritesDoNotInterleave(t *testing.T) {
	var out bytes.Buffer
	s := New(&out, FormatJSON)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				batch := []cloudevents.Event{cetest.New(t, fmt.Sprintf("%d-%d-a", g, i), i), cetest.New(t, fmt.Sprintf("%d-%d-b", g, i), i)}
				if err := s.Write(context.Background(), batch); err != nil {
					t.Errorf("Write: %v", err)
				}
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var e cloudevents.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("interleaved or broken line %q: %v", sc.Text(), err)
		}
		seen[e.ID()] = true
	}
	if len(seen) != 8*50*2 {
		t.Fatalf("saw %d distinct events, want %d", len(seen), 8*50*2)
	}
}
