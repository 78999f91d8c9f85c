package gust_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust"
)

// validSpec returns a spec that passes Validate; tests change one thing.
func validSpec() gust.FunctionSpec {
	return gust.FunctionSpec{Service: "hello", Image: "ghcr.io/example/hello:1"}
}

func TestFunctionSpec_Validate(t *testing.T) {
	for _, tt := range []struct {
		name      string
		edit      func(s *gust.FunctionSpec)
		wantField string // "" means valid
	}{
		{"OK", func(s *gust.FunctionSpec) {}, ""},
		{"OKDigitsAndDashes", func(s *gust.FunctionSpec) { s.Service = "a-1-b2" }, ""},
		{"OKOneChar", func(s *gust.FunctionSpec) { s.Service = "a" }, ""},
		{"OK63Chars", func(s *gust.FunctionSpec) { s.Service = strings.Repeat("a", 63) }, ""},
		{"OKNamespace", func(s *gust.FunctionSpec) { s.Namespace = "team-a" }, ""},
		{"OKAllLabels", func(s *gust.FunctionSpec) {
			s.Labels = map[string]string{
				gust.LabelScaleMin: "1", gust.LabelScaleMax: "5", gust.LabelConcurrency: "10",
				gust.LabelIdleTimeout: "30s", gust.LabelTimeout: "2m", gust.LabelHealth: "tcp",
			}
		}, ""},
		{"OKResources", func(s *gust.FunctionSpec) {
			s.Limits = &gust.FunctionResources{Memory: "128Mi", CPU: "500m"}
			s.Requests = &gust.FunctionResources{Memory: "64Mi", CPU: "0.1"}
		}, ""},
		{"ErrNameRequired", func(s *gust.FunctionSpec) { s.Service = "" }, "service"},
		{"ErrNameTooLong", func(s *gust.FunctionSpec) { s.Service = strings.Repeat("a", 64) }, "service"},
		{"ErrNameUppercase", func(s *gust.FunctionSpec) { s.Service = "Hello" }, "service"},
		{"ErrNameBad", func(s *gust.FunctionSpec) { s.Service = "Bad_Name!" }, "service"},
		{"ErrNameLeadingDash", func(s *gust.FunctionSpec) { s.Service = "-hello" }, "service"},
		{"ErrNameTrailingDash", func(s *gust.FunctionSpec) { s.Service = "hello-" }, "service"},
		{"ErrNameDot", func(s *gust.FunctionSpec) { s.Service = "a.b" }, "service"},
		{"ErrNamespace", func(s *gust.FunctionSpec) { s.Namespace = "Team_A" }, "namespace"},
		{"ErrImageRequired", func(s *gust.FunctionSpec) { s.Image = "" }, "image"},
		{"ErrImageBlank", func(s *gust.FunctionSpec) { s.Image = "  " }, "image"},
		{"ErrImageWhitespace", func(s *gust.FunctionSpec) { s.Image = "a b" }, "image"},
		{"ErrEnvVarEmptyName", func(s *gust.FunctionSpec) { s.EnvVars = map[string]string{"": "x"} }, "envVars"},
		{"ErrEnvVarEquals", func(s *gust.FunctionSpec) { s.EnvVars = map[string]string{"A=B": "x"} }, "envVars"},
		{"ErrMinAboveMax", func(s *gust.FunctionSpec) {
			s.Labels = map[string]string{gust.LabelScaleMin: "5", gust.LabelScaleMax: "2"}
		}, "labels." + gust.LabelScaleMin},
		{"ErrMinAboveDefaultMax", func(s *gust.FunctionSpec) {
			s.Labels = map[string]string{gust.LabelScaleMin: "21"}
		}, "labels." + gust.LabelScaleMin},
		{"ErrHealthRelative", func(s *gust.FunctionSpec) {
			s.Labels = map[string]string{gust.LabelHealth: "health"}
		}, "labels." + gust.LabelHealth},
		{"ErrHealthEmpty", func(s *gust.FunctionSpec) {
			s.Labels = map[string]string{gust.LabelHealth: ""}
		}, "labels." + gust.LabelHealth},
		{"ErrLimitsMemory", func(s *gust.FunctionSpec) { s.Limits = &gust.FunctionResources{Memory: "lots"} }, "limits.memory"},
		{"ErrLimitsCPU", func(s *gust.FunctionSpec) { s.Limits = &gust.FunctionResources{CPU: "fast"} }, "limits.cpu"},
		{"ErrRequestsMemory", func(s *gust.FunctionSpec) { s.Requests = &gust.FunctionResources{Memory: "-1"} }, "requests.memory"},
		{"ErrRequestsCPU", func(s *gust.FunctionSpec) { s.Requests = &gust.FunctionResources{CPU: "0"} }, "requests.cpu"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := validSpec()
			tt.edit(&s)
			err := s.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error naming %q", tt.wantField)
			}
			if got, want := gust.ErrorCode(err), gust.EINVALID; !reflect.DeepEqual(got, want) {
				t.Errorf("code = %q, want %q (err %v)", got, want, err)
			}
			if got, want := gust.ErrorField(err), tt.wantField; !reflect.DeepEqual(got, want) {
				t.Errorf("field = %q, want %q (err %v)", got, want, err)
			}
		})
	}
}

// TestFunctionSpec_Validate_ScalingLabels gives each scaling label a value
// it must refuse and checks that the error names that label.
func TestFunctionSpec_Validate_ScalingLabels(t *testing.T) {
	bad := map[string][]string{
		gust.LabelScaleMin:    {"x", "-1", "1.5", ""},
		gust.LabelScaleMax:    {"x", "0", "-3", ""},
		gust.LabelConcurrency: {"x", "0", "-1"},
		gust.LabelIdleTimeout: {"x", "0s", "-5s", "30"},
		gust.LabelPauseAfter:  {"x", "-5s", "30", ""},
		gust.LabelTimeout:     {"x", "0s", "-1m", "10"},
		gust.LabelUser:        {"", "root", "nobody:nogroup", "1000:", ":1000", "-1", "1000:-1", "2147483648", "1:2:3", " 1000", "1e3"},
	}
	for key, values := range bad {
		for _, v := range values {
			t.Run(key+"="+v, func(t *testing.T) {
				s := validSpec()
				s.Labels = map[string]string{key: v}
				err := s.Validate()
				if got, want := gust.ErrorCode(err), gust.EINVALID; !reflect.DeepEqual(got, want) {
					t.Fatalf("code = %q, want %q (err %v)", got, want, err)
				}
				if got, want := gust.ErrorField(err), "labels."+key; !reflect.DeepEqual(got, want) {
					t.Errorf("field = %q, want %q", got, want)
				}
			})
		}
	}
}

func TestParseConfig(t *testing.T) {
	t.Run("Defaults", func(t *testing.T) {
		s := validSpec()
		got, err := gust.ParseConfig(&s)
		if err != nil {
			t.Fatal(err)
		}
		want := gust.FunctionConfig{
			Min:         gust.DefaultScaleMin,
			Max:         gust.DefaultScaleMax,
			Concurrency: gust.DefaultConcurrency,
			IdleTimeout: gust.DefaultIdleTimeout,
			PauseAfter:  gust.DefaultPauseAfter,
			Timeout:     gust.DefaultTimeout,
			MemoryBytes: gust.DefaultMemory,
			NanoCPUs:    0,
			HealthPath:  gust.DefaultHealthPath,
			ScaleFactor: 20, ScaleToZero: true,
			Retry: gust.RetryPolicy{
				MaxAttempts: 3, MinDelay: time.Second, MaxDelay: time.Minute, MaxAge: 24 * time.Hour,
				On5xx: true, On429: true, OnTimeout: true, OnCrash: true,
			},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ParseConfig() = %+v, want %+v", got, want)
		}
	})
	t.Run("Parsed", func(t *testing.T) {
		s := validSpec()
		s.Labels = map[string]string{
			gust.LabelScaleMin:      " 2 ",
			gust.LabelScaleMax:      "7",
			gust.LabelConcurrency:   "3",
			gust.LabelIdleTimeout:   "90s",
			gust.LabelPauseAfter:    "0",
			gust.LabelTimeout:       "5m",
			gust.LabelHealth:        "/ready",
			gust.LabelRetryAttempts: "5",
			gust.LabelRetryMinDelay: "100ms",
			gust.LabelRetryMaxDelay: "2s",
			gust.LabelRetryOn:       "5xx, timeout",
			gust.LabelRetryMaxAge:   "1h",
			gust.LabelUser:          "1000:1000",
		}
		s.Annotations = map[string]string{
			gust.AnnotationTopic: "orders.created, orders.*.paid,audit.>", gust.AnnotationStream: "ORDERS", gust.AnnotationStreamFilter: "orders.>",
		}
		s.Limits = &gust.FunctionResources{Memory: "256Mi", CPU: "1.5"}
		got, err := gust.ParseConfig(&s)
		if err != nil {
			t.Fatal(err)
		}
		want := gust.FunctionConfig{
			Min:         2,
			Max:         7,
			Concurrency: 3,
			IdleTimeout: 90 * time.Second,
			Timeout:     5 * time.Minute,
			MemoryBytes: 256 << 20,
			NanoCPUs:    1_500_000_000,
			HealthPath:  "/ready",
			User:        "1000:1000",
			Retry: gust.RetryPolicy{MaxAttempts: 5, MinDelay: 100 * time.Millisecond, MaxDelay: 2 * time.Second,
				MaxAge: time.Hour, On5xx: true, OnTimeout: true},
			Topics: []string{"orders.created", "orders.*.paid", "audit.>"},
			Stream: "ORDERS", StreamFilter: "orders.>",
			ScaleFactor: 20,
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ParseConfig() = %+v, want %+v", got, want)
		}
	})
	t.Run("User", func(t *testing.T) {
		for _, v := range []string{"0", "65534", "1000:1000", "0:0", "2147483647:2147483647"} {
			s := validSpec()
			s.Labels = map[string]string{gust.LabelUser: v}
			got, err := gust.ParseConfig(&s)
			if err != nil || got.User != v {
				t.Errorf("%s=%q: User = %q, %v, want %q", gust.LabelUser, v, got.User, err, v)
			}
		}
	})
	t.Run("HealthTCP", func(t *testing.T) {
		s := validSpec()
		s.Labels = map[string]string{gust.LabelHealth: "tcp"}
		got, err := gust.ParseConfig(&s)
		if err != nil {
			t.Fatal(err)
		}
		if !got.HealthTCP {
			t.Errorf("HealthTCP = false, want true")
		}
	})
	t.Run("MinEqualsMax", func(t *testing.T) {
		s := validSpec()
		s.Labels = map[string]string{gust.LabelScaleMin: "3", gust.LabelScaleMax: "3"}
		got, err := gust.ParseConfig(&s)
		if err != nil {
			t.Fatal(err)
		}
		if got.Min != 3 || got.Max != 3 {
			t.Errorf("Min, Max = %d, %d, want 3, 3", got.Min, got.Max)
		}
	})
}

func TestParseMemory(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "128Mi", want: 128 << 20},
		{in: "1Gi", want: 1 << 30},
		{in: "64Ki", want: 64 << 10},
		{in: "256m", want: 256 << 20}, // Docker notation
		{in: "1g", want: 1 << 30},
		{in: "500M", want: 500_000_000},
		{in: "2G", want: 2_000_000_000},
		{in: "100k", want: 100_000},
		{in: "1048576", want: 1 << 20},
		{in: " 128Mi ", want: 128 << 20},
		{in: "0", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "-1Gi", wantErr: true},
		{in: "abc", wantErr: true},
		{in: "", wantErr: true},
		{in: "Mi", wantErr: true},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := gust.ParseMemory(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseMemory(%q) = %d, nil; want an error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseMemory(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseMemory(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseCPU(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "0.5", want: 500_000_000},
		{in: "500m", want: 500_000_000},
		{in: "2", want: 2_000_000_000},
		{in: "250m", want: 250_000_000},
		{in: "1.5", want: 1_500_000_000},
		{in: " 1 ", want: 1_000_000_000},
		{in: "x", wantErr: true},
		{in: "0", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "m", wantErr: true},
		{in: "", wantErr: true},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := gust.ParseCPU(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseCPU(%q) = %d, nil; want an error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCPU(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseCPU(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

// TestParseQuantity_NotFinite checks that quantities which parse as floats
// but are not finite, or overflow int64, are refused rather than turned
// into a negative number.
func TestParseQuantity_NotFinite(t *testing.T) {
	for _, in := range []string{"NaN", "Inf", "+Inf", "1e30", "1e30m"} {
		if got, err := gust.ParseCPU(in); err == nil {
			t.Errorf("ParseCPU(%q) = %d, nil; want an error", in, got)
		}
		if got, err := gust.ParseMemory(in); err == nil {
			t.Errorf("ParseMemory(%q) = %d, nil; want an error", in, got)
		}
	}
	s := validSpec()
	s.Limits = &gust.FunctionResources{CPU: "NaN"}
	if got, want := gust.ErrorField(s.Validate()), "limits.cpu"; !reflect.DeepEqual(got, want) {
		t.Errorf("Validate() with limits.cpu NaN: field = %q, want %q", got, want)
	}
}

// TestParseCPU_Exact checks that millicores convert to nano-CPUs exactly.
func TestParseCPU_Exact(t *testing.T) {
	for _, in := range []string{"1001m", "1.001", "1003m", "1.005"} {
		got, err := gust.ParseCPU(in)
		if err != nil {
			t.Fatal(err)
		}
		var want int64
		switch in {
		case "1001m", "1.001":
			want = 1_001_000_000
		case "1003m":
			want = 1_003_000_000
		case "1.005":
			want = 1_005_000_000
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ParseCPU(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestFunction_Config(t *testing.T) {
	// A scale-function order is a count wanted now, not a minimum nor a
	// new max: the config keeps the labels' min and max.
	for _, tt := range []struct {
		name    string
		labels  map[string]string
		order   *gust.ScaleOrder
		wantMin int
		wantMax int
	}{
		{name: "NoOrder", wantMin: gust.DefaultScaleMin, wantMax: gust.DefaultScaleMax},
		{name: "Labels", labels: map[string]string{gust.LabelScaleMin: "1", gust.LabelScaleMax: "4"}, wantMin: 1, wantMax: 4},
		{name: "Order", labels: map[string]string{gust.LabelScaleMax: "4"}, order: &gust.ScaleOrder{Replicas: 3}, wantMin: 0, wantMax: 4},
		{name: "OrderZero", labels: map[string]string{gust.LabelScaleMin: "2"}, order: &gust.ScaleOrder{}, wantMin: 2, wantMax: gust.DefaultScaleMax},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fn := gust.Function{Spec: validSpec(), Scaled: tt.order}
			fn.Spec.Labels = tt.labels
			c := fn.Config()
			if c.Min != tt.wantMin || c.Max != tt.wantMax {
				t.Errorf("Config() Min, Max = %d, %d, want %d, %d", c.Min, c.Max, tt.wantMin, tt.wantMax)
			}
		})
	}
}

// TestParseConfig_ScaleLabels: OpenFaaS Pro's autoscaling labels parse,
// and a bad one is refused with an error naming it.
func TestParseConfig_ScaleLabels(t *testing.T) {
	for _, tt := range []struct {
		name      string
		labels    map[string]string
		wantField string
		check     func(c gust.FunctionConfig) string
	}{
		{name: "Defaults", check: func(c gust.FunctionConfig) string {
			if c.ScaleType != "" || c.ScaleFactor != 20 || !c.ScaleToZero || c.ScaleProportion != 0 {
				return fmt.Sprintf("got type %q factor %d zero %v proportion %v, want \"\" 20 true 0", c.ScaleType, c.ScaleFactor, c.ScaleToZero, c.ScaleProportion)
			}
			return ""
		}},
		{name: "Capacity", labels: map[string]string{gust.LabelScaleType: "capacity", gust.LabelScaleTarget: "5", gust.LabelScaleTargetProportion: "0.7"}, check: func(c gust.FunctionConfig) string {
			if c.ScaleType != gust.ScaleCapacity || c.ScaleTarget != 5 || c.ScaleProportion != 0.7 {
				return fmt.Sprintf("got %q %v %v", c.ScaleType, c.ScaleTarget, c.ScaleProportion)
			}
			return ""
		}},
		{name: "TargetAloneIsRPS", labels: map[string]string{gust.LabelScaleTarget: "50"}, check: func(c gust.FunctionConfig) string {
			if c.ScaleType != gust.ScaleRPS {
				return fmt.Sprintf("type %q, want rps (OpenFaaS Pro's default)", c.ScaleType)
			}
			return ""
		}},
		{name: "ZeroFalseKeepsOne", labels: map[string]string{gust.LabelScaleZero: "false"}, check: func(c gust.FunctionConfig) string {
			if c.Min != 1 || c.ScaleToZero {
				return fmt.Sprintf("min %d zero %v, want 1 false", c.Min, c.ScaleToZero)
			}
			return ""
		}},
		{name: "ZeroTrueWithMin", labels: map[string]string{gust.LabelScaleZero: "true", gust.LabelScaleMin: "2"}, check: func(c gust.FunctionConfig) string {
			if c.Min != 2 || !c.ScaleToZero {
				return fmt.Sprintf("min %d zero %v, want 2 true", c.Min, c.ScaleToZero)
			}
			return ""
		}},
		{name: "ZeroDurationIsIdleTimeout", labels: map[string]string{gust.LabelScaleZeroDuration: "15m"}, check: func(c gust.FunctionConfig) string {
			if c.IdleTimeout != 15*time.Minute {
				return fmt.Sprintf("idle timeout %s, want 15m", c.IdleTimeout)
			}
			return ""
		}},
		{name: "Factor", labels: map[string]string{gust.LabelScaleFactor: "0"}, check: func(c gust.FunctionConfig) string {
			if c.ScaleFactor != 0 {
				return fmt.Sprintf("factor %d, want 0", c.ScaleFactor)
			}
			return ""
		}},
		{name: "Window", labels: map[string]string{gust.LabelScaleWindow: "30s"}, check: func(c gust.FunctionConfig) string {
			if c.ScaleWindow != 30*time.Second {
				return fmt.Sprintf("window %s, want 30s", c.ScaleWindow)
			}
			return ""
		}},
		{name: "ErrWindow", labels: map[string]string{gust.LabelScaleWindow: "2s"}, wantField: "labels." + gust.LabelScaleWindow},
		{name: "ErrType", labels: map[string]string{gust.LabelScaleType: "memory"}, wantField: "labels." + gust.LabelScaleType},
		{name: "ErrTarget", labels: map[string]string{gust.LabelScaleTarget: "-1"}, wantField: "labels." + gust.LabelScaleTarget},
		{name: "ErrTargetNaN", labels: map[string]string{gust.LabelScaleTarget: "NaN"}, wantField: "labels." + gust.LabelScaleTarget},
		{name: "ErrProportion", labels: map[string]string{gust.LabelScaleTargetProportion: "1.5"}, wantField: "labels." + gust.LabelScaleTargetProportion},
		{name: "ErrFactor", labels: map[string]string{gust.LabelScaleFactor: "120"}, wantField: "labels." + gust.LabelScaleFactor},
		{name: "ErrZero", labels: map[string]string{gust.LabelScaleZero: "maybe"}, wantField: "labels." + gust.LabelScaleZero},
		{name: "ErrZeroDuration", labels: map[string]string{gust.LabelScaleZeroDuration: "15"}, wantField: "labels." + gust.LabelScaleZeroDuration},
		{name: "ErrZeroDurationDisagrees", labels: map[string]string{gust.LabelScaleZeroDuration: "15m", gust.LabelIdleTimeout: "5m"}, wantField: "labels." + gust.LabelScaleZeroDuration},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spec := validSpec()
			spec.Labels = tt.labels
			c, err := gust.ParseConfig(&spec)
			if tt.wantField != "" {
				if got := gust.ErrorField(err); got != tt.wantField {
					t.Fatalf("error %v naming %q, want one naming %q", err, got, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if msg := tt.check(c); msg != "" {
				t.Error(msg)
			}
		})
	}
}

func TestFunction_Key(t *testing.T) {
	fn := gust.Function{Spec: gust.FunctionSpec{Service: "hello", Namespace: "team"}}
	if got, want := fn.Key(), "team.hello"; !reflect.DeepEqual(got, want) {
		t.Errorf("Key() = %q, want %q", got, want)
	}
	if got, want := gust.FunctionKey(gust.DefaultNamespace, "x"), "openfaas-fn.x"; !reflect.DeepEqual(got, want) {
		t.Errorf("FunctionKey() = %q, want %q", got, want)
	}
}

func TestFunctionSpec_Normalize(t *testing.T) {
	s := validSpec()
	s.Normalize()
	if got, want := s.Namespace, gust.DefaultNamespace; !reflect.DeepEqual(got, want) {
		t.Errorf("Namespace = %q, want %q", got, want)
	}
	s.Namespace = "team"
	s.Normalize()
	if got, want := s.Namespace, "team"; !reflect.DeepEqual(got, want) {
		t.Errorf("Namespace = %q, want %q", got, want)
	}
}

func TestValidateTriggers(t *testing.T) {
	for _, tt := range []struct {
		ann    map[string]string
		labels map[string]string
		field  string
	}{
		{map[string]string{gust.AnnotationTopic: "a..b"}, nil, "annotations.topic"},
		{map[string]string{gust.AnnotationTopic: "a.>.b"}, nil, "annotations.topic"},
		{map[string]string{gust.AnnotationTopic: "a b"}, nil, "annotations.topic"},
		{map[string]string{gust.AnnotationTopic: "a.b*"}, nil, "annotations.topic"},
		{map[string]string{gust.AnnotationTopic: "ok.one,"}, nil, "annotations.topic"},
		{map[string]string{gust.AnnotationStream: "bad.name"}, nil, "annotations.gust.stream"},
		{map[string]string{gust.AnnotationStream: "S", gust.AnnotationStreamFilter: "x..y"}, nil, "annotations.gust.stream-filter"},
		{nil, map[string]string{gust.LabelRetryOn: "4xx"}, "labels.gust.retry.on"},
		{nil, map[string]string{gust.LabelRetryAttempts: "0"}, "labels.gust.retry.max-attempts"},
		{nil, map[string]string{gust.LabelRetryMinDelay: "1m", gust.LabelRetryMaxDelay: "1s"}, "labels.gust.retry.min-delay"},
	} {
		s := validSpec()
		s.Annotations, s.Labels = tt.ann, tt.labels
		if got := gust.ErrorField(s.Validate()); got != tt.field {
			t.Errorf("annotations %v labels %v: error field %q, want %q", tt.ann, tt.labels, got, tt.field)
		}
	}
}

func TestRetryPolicy(t *testing.T) {
	p := gust.RetryPolicy{MinDelay: time.Second, MaxDelay: 10 * time.Second, On5xx: true, OnTimeout: true}
	for _, tt := range []struct {
		status  int
		outcome string
		want    bool
	}{
		{500, gust.OutcomeError, true}, {503, gust.OutcomeRejected, true}, {429, gust.OutcomeOK, false},
		{504, gust.OutcomeTimeout, true}, {502, gust.OutcomeCrashed, false}, {404, gust.OutcomeOK, false}, {200, gust.OutcomeOK, false},
	} {
		if got := p.Retryable(tt.status, tt.outcome); got != tt.want {
			t.Errorf("Retryable(%d, %s) = %v, want %v", tt.status, tt.outcome, got, tt.want)
		}
	}
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 9: 10 * time.Second} {
		lo, hi := p.Backoff(n, 0), p.Backoff(n, 0.999999)
		if lo != want/2 || hi > want || hi < want-time.Millisecond {
			t.Errorf("Backoff(%d) spans [%v, %v], want [%v, %v]", n, lo, hi, want/2, want)
		}
	}
}

// TestReservedTriggers: no trigger names Gust's, NATS's or the replies'
// subjects, nor Gust's or NATS's streams, in any namespace; openfaas-fn
// cannot name the other namespaces' subjects.
func TestReservedTriggers(t *testing.T) {
	for _, ns := range []string{"", gust.DefaultNamespace, "team-x"} {
		for _, topic := range []string{">", "*", "*.orders", ">.x", "gust.>", "gust.scheduler.place", "$KV.gust_functions.x", "$JS.API.>", "$SYS.>", "_INBOX.x", "_GUST_INBOX.abc"} {
			s := validSpec()
			s.Namespace = ns
			s.Annotations = map[string]string{gust.AnnotationTopic: "ok.one," + topic}
			if got, want := gust.ErrorField(s.Validate()), "annotations."+gust.AnnotationTopic; got != want {
				t.Errorf("namespace %q, topic %q: error field %q, want %q", ns, topic, got, want)
			}
			s.Annotations = map[string]string{gust.AnnotationStream: "ORDERS", gust.AnnotationStreamFilter: topic}
			if got, want := gust.ErrorField(s.Validate()), "annotations."+gust.AnnotationStreamFilter; got != want {
				t.Errorf("namespace %q, stream filter %q: error field %q, want %q", ns, topic, got, want)
			}
		}
		for _, stream := range []string{"GUST_ASYNC", "GUST_METER", "GUST_DLQ", "KV_gust_functions", "OBJ_files", "gust_x", "kv_x"} {
			s := validSpec()
			s.Namespace = ns
			s.Annotations = map[string]string{gust.AnnotationStream: stream}
			if got, want := gust.ErrorField(s.Validate()), "annotations."+gust.AnnotationStream; got != want {
				t.Errorf("namespace %q, stream %q: error field %q, want %q", ns, stream, got, want)
			}
		}
	}
	s := validSpec()
	s.Annotations = map[string]string{gust.AnnotationTopic: "ns.team-x.orders"}
	if got, want := gust.ErrorField(s.Validate()), "annotations."+gust.AnnotationTopic; got != want {
		t.Errorf("openfaas-fn topic ns.team-x.orders: error field %q, want %q", got, want)
	}
}

// TestTriggerSubject: openfaas-fn subscribes to its topics as written,
// every other namespace to ns.NAMESPACE.TOPIC, stream filters alike.
func TestTriggerSubject(t *testing.T) {
	for _, tt := range []struct {
		ns, topic, filter   string
		wantTopic, wantFilt string
	}{
		{"", "orders.*", "", "orders.*", ""},
		{gust.DefaultNamespace, "orders.*", "orders.>", "orders.*", "orders.>"},
		{"team-x", "orders.*", "orders.>", "ns.team-x.orders.*", "ns.team-x.orders.>"},
		{"team-x", "orders", "", "ns.team-x.orders", "ns.team-x.>"},
		{"team-x", "ns.team-y.orders", "", "ns.team-x.ns.team-y.orders", "ns.team-x.>"},
	} {
		s := validSpec()
		s.Namespace = tt.ns
		s.Annotations = map[string]string{gust.AnnotationTopic: tt.topic, gust.AnnotationStream: "ORDERS"}
		if tt.filter != "" {
			s.Annotations[gust.AnnotationStreamFilter] = tt.filter
		}
		c, err := gust.ParseConfig(&s)
		if err != nil {
			t.Fatalf("namespace %q: %v", tt.ns, err)
		}
		if got := c.Topics; len(got) != 1 || got[0] != tt.wantTopic {
			t.Errorf("namespace %q topic %q: Topics = %q, want [%q]", tt.ns, tt.topic, got, tt.wantTopic)
		}
		if c.StreamFilter != tt.wantFilt {
			t.Errorf("namespace %q filter %q: StreamFilter = %q, want %q", tt.ns, tt.filter, c.StreamFilter, tt.wantFilt)
		}
	}
}

// TestValidateWithin: a deploy past an operator's bound is EINVALID naming
// the field; at the bound it passes; a zero bound is the default one.
func TestValidateWithin(t *testing.T) {
	b := gust.Bounds{MaxMemoryBytes: 1 << 30, MaxNanoCPUs: 2e9, MaxScale: 30, MaxConcurrency: 150, MaxTimeout: 2 * time.Minute,
		MaxIdleTimeout: time.Hour, MaxRetryAttempts: 5, MaxRetryAge: 48 * time.Hour, MaxLabels: 3, MaxAnnotations: 2, MaxKeyBytes: 30, MaxValueBytes: 10}
	if err := b.Check(); err != nil {
		t.Fatalf("bounds of the test: %v", err)
	}
	many := func(n int) map[string]string {
		m := map[string]string{}
		for i := 0; i < n; i++ {
			m[strings.Repeat("k", i+1)] = "v"
		}
		return m
	}
	for _, tt := range []struct {
		name  string
		edit  func(s *gust.FunctionSpec)
		field string
	}{
		{"AtBounds", func(s *gust.FunctionSpec) {
			s.Limits = &gust.FunctionResources{Memory: "1Gi", CPU: "2"}
			s.Labels = map[string]string{gust.LabelScaleMax: "30", gust.LabelConcurrency: "150", gust.LabelTimeout: "2m"}
		}, ""},
		{"Memory", func(s *gust.FunctionSpec) { s.Limits = &gust.FunctionResources{Memory: "1025Mi"} }, "limits.memory"},
		{"Memory9EB", func(s *gust.FunctionSpec) { s.Limits = &gust.FunctionResources{Memory: "9000000000000000000"} }, "limits.memory"},
		{"CPU", func(s *gust.FunctionSpec) { s.Limits = &gust.FunctionResources{CPU: "2.5"} }, "limits.cpu"},
		{"RequestsMemory", func(s *gust.FunctionSpec) { s.Requests = &gust.FunctionResources{Memory: "2Gi"} }, "requests.memory"},
		{"RequestsCPU", func(s *gust.FunctionSpec) { s.Requests = &gust.FunctionResources{CPU: "3"} }, "requests.cpu"},
		{"ScaleMax", func(s *gust.FunctionSpec) { s.Labels = map[string]string{gust.LabelScaleMax: "31"} }, "labels." + gust.LabelScaleMax},
		{"Concurrency", func(s *gust.FunctionSpec) { s.Labels = map[string]string{gust.LabelConcurrency: "151"} }, "labels." + gust.LabelConcurrency},
		{"Timeout", func(s *gust.FunctionSpec) { s.Labels = map[string]string{gust.LabelTimeout: "121s"} }, "labels." + gust.LabelTimeout},
		{"IdleTimeout", func(s *gust.FunctionSpec) { s.Labels = map[string]string{gust.LabelIdleTimeout: "2h"} }, "labels." + gust.LabelIdleTimeout},
		{"RetryAttempts", func(s *gust.FunctionSpec) { s.Labels = map[string]string{gust.LabelRetryAttempts: "6"} }, "labels." + gust.LabelRetryAttempts},
		{"RetryAge", func(s *gust.FunctionSpec) { s.Labels = map[string]string{gust.LabelRetryMaxAge: "49h"} }, "labels." + gust.LabelRetryMaxAge},
		{"Labels", func(s *gust.FunctionSpec) { s.Labels = many(4) }, "labels"},
		{"Annotations", func(s *gust.FunctionSpec) { s.Annotations = many(3) }, "annotations"},
		{"LabelKey", func(s *gust.FunctionSpec) { s.Labels = map[string]string{strings.Repeat("k", 31): "v"} }, "labels"},
		{"AnnotationValue", func(s *gust.FunctionSpec) { s.Annotations = map[string]string{"a": strings.Repeat("v", 11)} }, "annotations.a"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := validSpec()
			tt.edit(&s)
			err := s.ValidateWithin(b)
			if got := gust.ErrorField(err); got != tt.field || (tt.field != "" && gust.ErrorCode(err) != gust.EINVALID) {
				t.Errorf("ValidateWithin() = %v (field %q), want field %q", err, got, tt.field)
			}
		})
	}
	// The defaults: what the acceptance check deploys.
	s := validSpec()
	s.Limits = &gust.FunctionResources{Memory: "9000000000000000000"}
	if got, want := gust.ErrorField(s.ValidateWithin(gust.Bounds{})), "limits.memory"; got != want {
		t.Errorf("9 EB memory within the default bounds: field %q, want %q", got, want)
	}
	s = validSpec()
	s.Labels = map[string]string{gust.LabelScaleMax: "100000"}
	if got, want := gust.ErrorField(s.Validate()), "labels."+gust.LabelScaleMax; got != want {
		t.Errorf("scale.max 100000 within the default bounds: field %q, want %q", got, want)
	}
}

// TestBounds_Check: bounds below what a spec gets by default would refuse
// every deploy that sets nothing, so they are refused, naming the flag.
func TestBounds_Check(t *testing.T) {
	if err := (gust.Bounds{}).Check(); err != nil {
		t.Errorf("zero bounds (the defaults): %v", err)
	}
	for _, tt := range []struct {
		b     gust.Bounds
		field string
	}{
		{gust.Bounds{MaxMemoryBytes: 64 << 20}, "max-memory"},
		{gust.Bounds{MaxNanoCPUs: 5e8}, "max-cpu"},
		{gust.Bounds{MaxScale: 19}, "max-scale"},
		{gust.Bounds{MaxConcurrency: 99}, "max-concurrency"},
		{gust.Bounds{MaxTimeout: 59 * time.Second}, "max-timeout"},
		{gust.Bounds{MaxIdleTimeout: time.Minute}, "max-idle-timeout"},
		{gust.Bounds{MaxRetryAttempts: 2}, "max-retry-attempts"},
		{gust.Bounds{MaxRetryAge: time.Hour}, "max-retry-age"},
	} {
		if got := gust.ErrorField(tt.b.Check()); got != tt.field {
			t.Errorf("%+v: field %q, want %q", tt.b, got, tt.field)
		}
	}
}

// TestValidateWithin_BelowDefaults: bounds below the defaults (which
// Bounds.Check refuses at start) refuse a spec that sets nothing, naming
// the field, rather than failing.
func TestValidateWithin_BelowDefaults(t *testing.T) {
	s := validSpec()
	if got, want := gust.ErrorField(s.ValidateWithin(gust.Bounds{MaxMemoryBytes: 64 << 20})), "limits.memory"; got != want {
		t.Errorf("default memory above a 64Mi bound: field %q, want %q", got, want)
	}
}

// TestParseConfig_MemoryBelowDocker: a memory limit below Docker's 6Mi
// (OpenFaaS functions are deployed with 5Mi) is raised to it, and
// MemoryRaised says so; at or above it nothing is said.
func TestParseConfig_MemoryBelowDocker(t *testing.T) {
	s := validSpec()
	s.Limits = &gust.FunctionResources{Memory: "5Mi"}
	c, err := gust.ParseConfig(&s)
	if err != nil {
		t.Fatalf("ParseConfig with 5Mi: %v", err)
	}
	if c.MemoryBytes != gust.DockerMinMemory {
		t.Errorf("memory %d bytes, want %d", c.MemoryBytes, gust.DockerMinMemory)
	}
	if s.MemoryRaised() == "" {
		t.Error("MemoryRaised says nothing of 5Mi")
	}
	s.Limits.Memory = "6Mi"
	if w := s.MemoryRaised(); w != "" {
		t.Errorf("MemoryRaised of 6Mi: %q, want nothing", w)
	}
}
