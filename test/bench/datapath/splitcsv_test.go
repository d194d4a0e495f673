package main

import "testing"

// TestSplitCSV: traffic rows become one row per point with a column per
// metric (a failed point's other cells empty), the rest stay long.
func TestSplitCSV(t *testing.T) {
	long := "section,n,mode,kind,workers,rep,leg,metric,value,unit\n" +
		"traffic,1,tc,conn,1,1,1,rate,100,1/s\n" +
		"traffic,1,tc,conn,1,1,1,p50,2.5,us\n" +
		"traffic,1,tc,conn,1,2,2,failed,1,count\n" +
		"agent,1,,,,,,rss,42,bytes\n"
	traffic, other, err := splitCSV([]byte(long))
	if err != nil {
		t.Fatal(err)
	}
	if want := "n,mode,kind,workers,rep,leg,rate[1/s],p50[us],failed[count]\n1,tc,conn,1,1,1,100,2.5,\n1,tc,conn,1,2,2,,,1\n"; string(traffic) != want {
		t.Errorf("traffic:\n%s\nwant:\n%s", traffic, want)
	}
	if want := "section,n,mode,kind,workers,rep,leg,metric,value,unit\nagent,1,,,,,,rss,42,bytes\n"; string(other) != want {
		t.Errorf("other:\n%s\nwant:\n%s", other, want)
	}
}
