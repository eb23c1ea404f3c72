# description: swap on a 16M machine (4M of it a hugetlb pool): aging clears A bits, the MMU sets them again on
# the next use, reclaim keeps the pages found referenced and swaps the others out; loads swap them back in
boot mem=16M swap=8M hugepages=2
file /data/cache 256K
spawn hog
read /data/cache
malloc hot 256K
touch hot
malloc a 5M
touch a
repeat 3
load hot
malloc b$i 1M
touch b$i
end
load a 0 512K
report vmstat,free
