package pipelines

// RocketMQSource consumes a topic with a clustering consumer group.
type RocketMQSource struct {
	// NameServers are the name server addresses (host:port).
	NameServers []string `yaml:"nameServers" json:"nameServers" jsonschema:"required,minItems=1"`
	// Topic to consume.
	Topic string `yaml:"topic" json:"topic" jsonschema:"required"`
	// Group is the consumer group.
	Group string `yaml:"group" json:"group" jsonschema:"required"`
}

// RocketMQSink sends events synchronously to a topic.
type RocketMQSink struct {
	// NameServers are the name server addresses (host:port).
	NameServers []string `yaml:"nameServers,omitempty" json:"nameServers,omitempty"`
	// Topic to send to.
	Topic string `yaml:"topic" json:"topic" jsonschema:"required"`
}

func validateRocketMQSource(v *validator, path string, s *RocketMQSource) {
	v.requiredList(path+".nameServers", len(s.NameServers))
	v.required(path+".topic", s.Topic)
	v.required(path+".group", s.Group)
}

func validateRocketMQSink(v *validator, path string, s *RocketMQSink) {
	v.required(path+".topic", s.Topic)
}

func rocketMQSourceDefaults(s *RocketMQSource) {}

func rocketMQSinkDefaults(s *RocketMQSink, src *SourceSpec) {}
