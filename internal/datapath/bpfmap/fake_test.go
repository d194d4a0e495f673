package bpfmap

import (
	"errors"
	"testing"
)

func TestFakeCapacity(t *testing.T) {
	f := NewFake[int, int]("test", 2)
	if err := f.Update([]int{1, 2}, []int{10, 20}); err != nil {
		t.Fatal(err)
	}
	if err := f.Update([]int{1}, []int{11}); err != nil {
		t.Errorf("overwriting a key of a full map: %v", err)
	}
	err := f.Update([]int{3}, []int{30})
	var ke *KeyError[int]
	if !errors.Is(err, ErrFull) || !errors.As(err, &ke) || ke.Key != 3 {
		t.Errorf("inserting into a full map: %v, want ErrFull naming key 3", err)
	}
	f.SetMaxEntries(3)
	if err := f.Update([]int{3}, []int{30}); err != nil {
		t.Errorf("after growing to 3: %v", err)
	}
	if f.MaxEntries() != 3 {
		t.Errorf("MaxEntries = %d, want 3", f.MaxEntries())
	}
}

func TestFakeRangeStopsWhenAsked(t *testing.T) {
	f := NewFake[int, int]("m", 8)
	if err := f.Update([]int{1, 2, 3}, []int{10, 20, 30}); err != nil {
		t.Fatal(err)
	}
	seen := 0
	if err := f.Range(func(int, int) bool { seen++; return seen < 2 }); err != nil {
		t.Fatal(err)
	}
	if seen != 2 {
		t.Fatalf("Range visited %d entries after fn returned false at the 2nd; want 2", seen)
	}
}
