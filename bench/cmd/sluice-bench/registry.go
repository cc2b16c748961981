package main

import (
	"github.com/sluicehq/sluice/bench/b1"
	"github.com/sluicehq/sluice/bench/b2"
	"github.com/sluicehq/sluice/bench/b3"
	"github.com/sluicehq/sluice/bench/b4"
	"github.com/sluicehq/sluice/bench/b5"
	"github.com/sluicehq/sluice/bench/b6"
	"github.com/sluicehq/sluice/bench/b7"
	"github.com/sluicehq/sluice/bench/b8scenario"
	"github.com/sluicehq/sluice/bench/internal/harness"
)

// scenarios is the one place benchmarks are registered, in the order
// `make bench` runs them. A new scenario (B4, B6, B7, B8…) lives in its own
// package under bench/ and adds one line here.
func scenarios() []harness.Scenario {
	return []harness.Scenario{
		b1.Scenario(),
		b1.BatchScenario(),
		b2.Scenario(),
		b3.Scenario(),
		b4.Scenario(),
		b5.Scenario(),
		b6.Scenario(),
		b7.Scenario(),
		b8scenario.Scenario(),
	}
}
