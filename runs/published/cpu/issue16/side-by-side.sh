#!/bin/bash
# Side by side on this machine, one thread: nanoBragg.c, the baseline engine (78759a1) and the new one.
set -u
R=/work/main/target/release/runner
B=/tmp/base/runner-78759a1
O=/tmp/pub; rm -rf $O; mkdir -p $O/c
cd /work/main
F="-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -distance 100 -pixel 0.1 -detpixels 1024 -mosflm -phisteps 10 -osc 0.1 -mosaic 0.5 -mosaic_dom 10"
{
echo "# nanoBragg.c (hoidn/nanoBragg feature/spec-based-2 golden_suite_generator/nanoBragg.c), gcc $(gcc -dumpversion) -O3, no OpenMP: one thread"
echo "# flags: $F -floatfile c.bin"
for i in 1 2 3; do ( cd $O/c && /usr/bin/time -f "nanoBragg.c run $i: %e s wall, %U s user" /tmp/nbc/nanoBragg $F -floatfile c.bin > /dev/null ) 2>&1 | tail -1; done
} > $O/c/nanobragg-c.log 2>&1
$R run experiments/bench-reference.toml --only device=cpu --jobs 1 --out $O/new > $O/new.log 2>&1
$B run experiments/bench-reference.toml --only device=cpu --only probe=forward-1thread --jobs 1 --out $O/base-forward > $O/base-forward.log 2>&1
$B run experiments/bench-reference.toml --only device=cpu --only probe=plus6-derivatives --only dtype=float64 --jobs 1 --out $O/base-plus6 > $O/base-plus6.log 2>&1
echo done > $O/DONE
