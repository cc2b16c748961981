package kafkaload

import (
	"encoding/json"
	"testing"

	"github.com/IBM/sarama"
)

func TestEventsData(t *testing.T) {
	tests := []struct {
		ev      Events
		i       int
		wantKey string
		wantSeq int64
	}{
		{Events{N: 10, Size: 1024, Keys: 3}, 7, `"k-1"`, 2},
		{Events{N: 10, Size: 256, Keys: 1000}, 0, `"k-0"`, 0},
		{Events{N: 5000, Size: 10, Keys: 1000}, 4321, `"k-321"`, 4}, // too small: fields kept
	}
	for _, tt := range tests {
		b := tt.ev.Data(tt.i)
		if tt.ev.Size >= 64 && len(b) != tt.ev.Size {
			t.Errorf("Data(%d) is %d bytes, want %d", tt.i, len(b), tt.ev.Size)
		}
		var d struct {
			ID  string          `json:"id"`
			Key json.RawMessage `json:"key"`
			Seq int64           `json:"seq"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("Data(%d) is not JSON: %v: %s", tt.i, err, b)
		}
		if d.ID != tt.ev.ID(tt.i) || string(d.Key) != tt.wantKey || d.Seq != tt.wantSeq {
			t.Errorf("Data(%d) = id %s key %s seq %d; want %s %s %d", tt.i, d.ID, d.Key, d.Seq, tt.ev.ID(tt.i), tt.wantKey, tt.wantSeq)
		}
		if `"`+tt.ev.Key(tt.i)+`"` != tt.wantKey {
			t.Errorf("Key(%d) = %s, want %s", tt.i, tt.ev.Key(tt.i), tt.wantKey)
		}
	}
}

func TestEventsSeqPerKeyIncreases(t *testing.T) {
	ev := Events{N: 3000, Size: 64, Keys: 7}
	last := map[string]int{}
	for i := range ev.N {
		k, seq := ev.Key(i), i/ev.Keys
		if prev, ok := last[k]; ok && seq != prev+1 {
			t.Fatalf("key %s: seq %d after %d", k, seq, prev)
		}
		last[k] = seq
	}
	if len(last) != 7 {
		t.Errorf("%d keys, want 7", len(last))
	}
}

// MaxBatchBytes bounds the producer's batches; 0 keeps sarama's default.
func TestProducerConfigBatchBound(t *testing.T) {
	def := producerConfig(Events{N: 1, Size: 1024, Keys: 1}).Producer.MaxMessageBytes
	if want := sarama.NewConfig().Producer.MaxMessageBytes; def != want {
		t.Errorf("default MaxMessageBytes = %d, want sarama's %d", def, want)
	}
	cfg := producerConfig(Events{N: 1, Size: 1024, Keys: 1, MaxBatchBytes: 128 << 10})
	if got := cfg.Producer.MaxMessageBytes; got != 128<<10 {
		t.Errorf("MaxMessageBytes = %d, want %d", got, 128<<10)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("config not valid: %v", err)
	}
}
