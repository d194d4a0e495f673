package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"strings"
)

// A small line chart drawn with the standard library only: one series per
// contender over the N values (equally spaced), a linear or log y axis,
// and labels in a built-in 3x5 pixel font. Paletted PNG, a few KiB.

type series struct {
	name   string    // in the legend
	key    string    // path or contender: picks the colour
	values []float64 // per x; NaN: no value
}

type chart struct {
	title, ylabel string
	xs            []string // x tick labels
	logY          bool
	series        []series
}

const (
	chartW, chartH = 720, 400
	marginL        = 70
	marginR        = 190 // legend
	marginT        = 48
	marginB        = 44
	fontScale      = 2
)

var chartPalette = color.Palette{
	color.White,
	color.Black,
	color.Gray{Y: 0xdd},                // grid
	color.RGBA{0x55, 0x55, 0x55, 0xff}, // direct
	color.RGBA{0x1f, 0x77, 0xb4, 0xff}, // fastpath TC
	color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, // fastpath sock
	color.RGBA{0xd6, 0x27, 0x28, 0xff}, // iptables
	color.RGBA{0xff, 0x7f, 0x0e, 0xff}, // nftables
	color.RGBA{0x94, 0x67, 0xbd, 0xff},
}

// seriesColor is the palette index of a contender's line.
func seriesColor(name string, i int) uint8 {
	switch name {
	case pathDirect:
		return 3
	case pathDirectNode:
		return 8
	case pathTC, "fastpath":
		return 4
	case pathSock:
		return 5
	case pathIPT:
		return 6
	case pathNFT:
		return 7
	}
	return uint8(3 + i%6)
}

func (c *chart) png() ([]byte, error) {
	img := image.NewPaletted(image.Rect(0, 0, chartW, chartH), chartPalette)
	pw, ph := chartW-marginL-marginR, chartH-marginT-marginB
	lo, hi := c.yRange()
	ypix := func(v float64) int {
		f := (v - lo) / (hi - lo)
		if c.logY {
			f = (math.Log10(v) - math.Log10(lo)) / (math.Log10(hi) - math.Log10(lo))
		}
		return marginT + ph - int(math.Round(f*float64(ph)))
	}
	xpix := func(i int) int {
		if len(c.xs) == 1 {
			return marginL + pw/2
		}
		return marginL + 20 + i*(pw-40)/(len(c.xs)-1)
	}
	// Grid and y ticks.
	for _, t := range c.yTicks(lo, hi) {
		y := ypix(t)
		hline(img, marginL, marginL+pw, y, 2)
		label := fmtTick(t)
		drawText(img, marginL-6-textWidth(label), y-5, label, 1)
	}
	hline(img, marginL, marginL+pw, marginT+ph, 1)
	vline(img, marginL, marginT, marginT+ph, 1)
	for i, x := range c.xs {
		vline(img, xpix(i), marginT+ph, marginT+ph+4, 1)
		drawText(img, xpix(i)-textWidth(x)/2, marginT+ph+8, x, 1)
	}
	drawText(img, marginL+pw/2-textWidth("SERVICES (N)")/2, chartH-16, "SERVICES (N)", 1)
	drawText(img, 8, 6, c.title, 1)
	drawText(img, 8, marginT-18, c.ylabel, 1)
	for si, s := range c.series {
		col := seriesColor(s.key, si)
		var px, py int
		have := false
		for i, v := range s.values {
			if math.IsNaN(v) || (c.logY && v <= 0) {
				have = false
				continue
			}
			x, y := xpix(i), ypix(v)
			if have {
				thickLine(img, px, py, x, y, col)
			}
			square(img, x, y, 3, col)
			px, py, have = x, y, true
		}
		ly := marginT + 8 + si*18
		lx := chartW - marginR + 12
		thickLine(img, lx, ly+4, lx+22, ly+4, col)
		drawText(img, lx+30, ly, s.name, 1)
	}
	var b bytes.Buffer
	err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&b, img)
	return b.Bytes(), err
}

// yRange spans every value, from 0 on a linear axis, with some headroom.
func (c *chart) yRange() (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, s := range c.series {
		for _, v := range s.values {
			if math.IsNaN(v) || (c.logY && v <= 0) {
				continue
			}
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if math.IsInf(lo, 0) {
		return 0.1, 1
	}
	if c.logY {
		return math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi*1.05)))
	}
	step := niceStep(hi * 1.1 / 5)
	return 0, math.Ceil(hi*1.1/step) * step
}

func (c *chart) yTicks(lo, hi float64) []float64 {
	var out []float64
	if c.logY {
		for v := lo; v <= hi*1.0001; v *= 10 {
			out = append(out, v)
		}
		return out
	}
	step := niceStep(hi / 5)
	for v := lo; v <= hi*1.0001; v += step {
		out = append(out, v)
	}
	return out
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

func fmtTick(v float64) string {
	switch {
	case v >= 1e6 && math.Mod(v, 1e6) == 0:
		return fmt.Sprintf("%.0fM", v/1e6)
	case v >= 1e3 && math.Mod(v, 1e3) == 0:
		return fmt.Sprintf("%.0fK", v/1e3)
	case v >= 1:
		return fmt.Sprintf("%.0f", v)
	default:
		return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
	}
}

func hline(img *image.Paletted, x0, x1, y int, c uint8) {
	for x := x0; x <= x1; x++ {
		img.SetColorIndex(x, y, c)
	}
}

func vline(img *image.Paletted, x, y0, y1 int, c uint8) {
	for y := y0; y <= y1; y++ {
		img.SetColorIndex(x, y, c)
	}
}

func square(img *image.Paletted, x, y, r int, c uint8) {
	for dy := -r; dy <= r; dy++ {
		hline(img, x-r, x+r, y+dy, c)
	}
}

// thickLine draws a 2-pixel line (Bresenham, doubled).
func thickLine(img *image.Paletted, x0, y0, x1, y1 int, c uint8) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	err := dx + dy
	for {
		img.SetColorIndex(x0, y0, c)
		img.SetColorIndex(x0+1, y0, c)
		img.SetColorIndex(x0, y0+1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * err
		if e2 >= dy {
			err += dy
			x0 += sx
		}
		if e2 <= dx {
			err += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}

func textWidth(s string) int { return len(s) * 4 * fontScale }

// drawText writes s in upper case with the 3x5 font, top-left at (x, y).
func drawText(img *image.Paletted, x, y int, s string, c uint8) {
	for _, r := range strings.ToUpper(s) {
		g, ok := glyphs[r]
		if !ok {
			g = glyphs['?']
		}
		for row := 0; row < 5; row++ {
			for col := 0; col < 3; col++ {
				if g[row*3+col] != '#' {
					continue
				}
				for dy := 0; dy < fontScale; dy++ {
					for dx := 0; dx < fontScale; dx++ {
						img.SetColorIndex(x+col*fontScale+dx, y+row*fontScale+dy, c)
					}
				}
			}
		}
		x += 4 * fontScale
	}
}

// glyphs are 3x5 pixels, row by row ('#' = ink).
var glyphs = map[rune]string{
	'0': "####.##.##.####", '1': ".#.##..#..#.###", '2': "###..#####..###", '3': "###..####..####",
	'4': "#.##.####..#..#", '5': "####..###..####", '6': "####..####.####", '7': "###..#..#..#..#",
	'8': "####.#####.####", '9': "####.####..####",
	'A': ".#.#.#####.##.#", 'B': "##.#.###.#.###.", 'C': ".###..#..#...##", 'D': "##.#.##.##.###.",
	'E': "####..##.#..###", 'F': "####..##.#..#..", 'G': ".###..#.##.#.##", 'H': "#.##.#####.##.#",
	'I': "###.#..#..#.###", 'J': "..#..#..##.#.#.", 'K': "#.##.###.#.##.#", 'L': "#..#..#..#..###",
	'M': "#.#####.##.##.#", 'N': "##.#.##.##.##.#", 'O': ".#.#.##.##.#.#.", 'P': "##.#.###.#..#..",
	'Q': ".#.#.##.##.#..#", 'R': "##.#.###.#.##.#", 'S': ".###...#...###.", 'T': "###.#..#..#..#.",
	'U': "#.##.##.##.####", 'V': "#.##.##.##.#.#.", 'W': "#.##.##.#####.#", 'X': "#.##.#.#.#.##.#",
	'Y': "#.##.#.#..#..#.", 'Z': "###..#.#.#..###",
	' ': "...............", '.': ".............#.", ',': "..........#.#..", '/': "..#..#.#.#..#..",
	'%': "#.#..#.#.#..#.#", '-': "......###......", ':': "....#.....#....", '(': ".#.#..#..#...#.",
	')': ".#...#..#..#.#.", '<': "..#.#.#...#...#", '>': "#...#...#.#.#..", '=': "...###...###...",
	'?': "###..#.#.....#.", '+': "....#.###.#....", '_': "............###", '|': ".#..#..#..#..#.",
}
