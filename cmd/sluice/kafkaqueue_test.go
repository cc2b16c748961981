package main

import (
	"reflect"
	"testing"

	"github.com/sluicehq/sluice/runtime/queue/kafkaq"
)

func TestParseKafkaQueueURL(t *testing.T) {
	good := map[string]kafkaq.Config{
		"kafka://k1:9092": {Brokers: []string{"k1:9092"}},
		"kafka://k1:9092,k2:9092?prefix=prod.tasks": {Brokers: []string{"k1:9092", "k2:9092"}, Prefix: "prod.tasks"},
		"kafka://k1:9092?partitions=3&prefix=p":     {Brokers: []string{"k1:9092"}, Prefix: "p", Partitions: 3},
	}
	for raw, want := range good {
		got, err := parseKafkaQueueURL(raw)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseKafkaQueueURL(%q) = %+v, %v; want %+v", raw, got, err, want)
		}
	}
	for _, raw := range []string{"kafka://", "kafka://k1:9092?partitions=0", "kafka://k1:9092?partitions=x", "kafka://k1:9092?acks=1"} {
		if _, err := parseKafkaQueueURL(raw); err == nil {
			t.Errorf("parseKafkaQueueURL(%q) accepted", raw)
		}
	}
}
