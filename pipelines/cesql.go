package pipelines

import (
	"errors"
	"fmt"

	cesql "github.com/cloudevents/sdk-go/sql/v2"
	cesqlparser "github.com/cloudevents/sdk-go/sql/v2/parser"
)

// ParseCESQL parses a CloudEvents SQL expression. Validation uses it to
// report bad filters with their position; runtime/filter uses it to compile
// them. The sdk-go parser (v2.16.2) panics on some malformed input
// ("type = "), so a panic becomes an error: a bad filter in a user's file is
// a validation error, never a crash.
func ParseCESQL(s string) (expr cesql.Expression, err error) {
	defer func() {
		if r := recover(); r != nil {
			// The panic text is the parser's internal state ("interface
			// conversion: ..."), useless to a user.
			expr, err = nil, errors.New("invalid CESQL expression: incomplete or malformed")
		}
	}()
	expr, err = cesqlparser.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("invalid CESQL expression: %w", err)
	}
	return expr, nil
}
