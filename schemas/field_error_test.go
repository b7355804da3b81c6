package schemas

import (
	"errors"
	"fmt"
	"testing"
)

func TestUnderKey(t *testing.T) {
	inner := errors.Join(
		FieldErrorf("brokers[0]", "missing port"),
		FieldErrorf("password, password_file", "set one, not both"),
		FieldErrorf("[2].owner", "required"),
		fmt.Errorf("not a field error"),
	)
	got := UnderKey("kafka", errors.Join(UnderKey("sasl", inner), nil))
	want := "kafka.sasl.brokers[0]: missing port\n" +
		"kafka.sasl.password, kafka.sasl.password_file: set one, not both\n" +
		"kafka.sasl[2].owner: required\n" +
		"kafka.sasl: not a field error"
	if got == nil || got.Error() != want {
		t.Fatalf("got\n%v\nwant\n%s", got, want)
	}
	var fe *FieldError
	if !errors.As(got, &fe) || fe.Key != "kafka.sasl.brokers[0]" {
		t.Fatalf("first error is not a FieldError with the full key: %#v", fe)
	}
	if UnderKey("x", nil) != nil {
		t.Fatal("UnderKey(nil) != nil")
	}
}
