package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind (the in-process
// Kafka clients and servers of the end-to-end tests included). Ignored:
// two process-wide goroutines libraries start on their own and never stop
// — sarama's go-metrics ticker and the cache janitor rocketmq-client-go
// starts at package initialisation.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
		goleak.IgnoreTopFunction("github.com/patrickmn/go-cache.(*janitor).Run"))
}
