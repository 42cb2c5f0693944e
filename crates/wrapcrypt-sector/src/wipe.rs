//! Clearing the SIMD register file after a batch of crypto.
//!
//! A core dump records every thread's register state, and AES code leaves
//! round keys and tweaks in vector registers when it returns. `vzeroall`
//! (what `wrapcrypt_secret::clear_vector_registers` does) reaches only
//! zmm0–zmm15; with AVX-512 the wide paths also leave data in zmm16–zmm31 and
//! in the opmask registers, so those are cleared here too.

#[cfg(target_arch = "x86_64")]
use core::arch::asm;

/// Zeroes every vector register the engines may have used: all of
/// zmm0–zmm31 and k0–k7 where the CPU has AVX-512, otherwise xmm/ymm0–15.
#[inline(never)]
pub(crate) fn clear_vector_registers() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was detected just above.
        return unsafe { clear_avx512() };
    }
    wrapcrypt_secret::clear_vector_registers();
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn clear_avx512() {
    // SAFETY: only writes registers that the asm declares as clobbered.
    unsafe {
        asm!(
            "vzeroall",
            "vpxord zmm16, zmm16, zmm16", "vpxord zmm17, zmm17, zmm17",
            "vpxord zmm18, zmm18, zmm18", "vpxord zmm19, zmm19, zmm19",
            "vpxord zmm20, zmm20, zmm20", "vpxord zmm21, zmm21, zmm21",
            "vpxord zmm22, zmm22, zmm22", "vpxord zmm23, zmm23, zmm23",
            "vpxord zmm24, zmm24, zmm24", "vpxord zmm25, zmm25, zmm25",
            "vpxord zmm26, zmm26, zmm26", "vpxord zmm27, zmm27, zmm27",
            "vpxord zmm28, zmm28, zmm28", "vpxord zmm29, zmm29, zmm29",
            "vpxord zmm30, zmm30, zmm30", "vpxord zmm31, zmm31, zmm31",
            "kxorw k0, k0, k0", "kxorw k1, k1, k1", "kxorw k2, k2, k2", "kxorw k3, k3, k3",
            "kxorw k4, k4, k4", "kxorw k5, k5, k5", "kxorw k6, k6, k6", "kxorw k7, k7, k7",
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
            out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
            out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
            out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
            out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
            out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
            out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _,
            out("zmm28") _, out("zmm29") _, out("zmm30") _, out("zmm31") _,
            out("k0") _, out("k1") _, out("k2") _, out("k3") _,
            out("k4") _, out("k5") _, out("k6") _, out("k7") _,
            options(nostack, nomem, preserves_flags)
        );
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn clears_all_zmm_and_opmask_registers() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512 on this CPU: the xmm clearing is wrapcrypt_secret's");
            return;
        }
        let mut z = [0xa5u8; 32 * 64];
        let mut k = [0xa5a5u16; 8];
        // SAFETY: AVX-512F was detected; the first asm only writes registers
        // it declares as clobbered, the second only reads registers and
        // writes the two buffers it is given.
        unsafe {
            asm!(
                "vpternlogd zmm0, zmm0, zmm0, 0xff",
                "vpternlogd zmm1, zmm1, zmm1, 0xff",
                "vpternlogd zmm2, zmm2, zmm2, 0xff",
                "vpternlogd zmm3, zmm3, zmm3, 0xff",
                "vpternlogd zmm4, zmm4, zmm4, 0xff",
                "vpternlogd zmm5, zmm5, zmm5, 0xff",
                "vpternlogd zmm6, zmm6, zmm6, 0xff",
                "vpternlogd zmm7, zmm7, zmm7, 0xff",
                "vpternlogd zmm8, zmm8, zmm8, 0xff",
                "vpternlogd zmm9, zmm9, zmm9, 0xff",
                "vpternlogd zmm10, zmm10, zmm10, 0xff",
                "vpternlogd zmm11, zmm11, zmm11, 0xff",
                "vpternlogd zmm12, zmm12, zmm12, 0xff",
                "vpternlogd zmm13, zmm13, zmm13, 0xff",
                "vpternlogd zmm14, zmm14, zmm14, 0xff",
                "vpternlogd zmm15, zmm15, zmm15, 0xff",
                "vpternlogd zmm16, zmm16, zmm16, 0xff",
                "vpternlogd zmm17, zmm17, zmm17, 0xff",
                "vpternlogd zmm18, zmm18, zmm18, 0xff",
                "vpternlogd zmm19, zmm19, zmm19, 0xff",
                "vpternlogd zmm20, zmm20, zmm20, 0xff",
                "vpternlogd zmm21, zmm21, zmm21, 0xff",
                "vpternlogd zmm22, zmm22, zmm22, 0xff",
                "vpternlogd zmm23, zmm23, zmm23, 0xff",
                "vpternlogd zmm24, zmm24, zmm24, 0xff",
                "vpternlogd zmm25, zmm25, zmm25, 0xff",
                "vpternlogd zmm26, zmm26, zmm26, 0xff",
                "vpternlogd zmm27, zmm27, zmm27, 0xff",
                "vpternlogd zmm28, zmm28, zmm28, 0xff",
                "vpternlogd zmm29, zmm29, zmm29, 0xff",
                "vpternlogd zmm30, zmm30, zmm30, 0xff",
                "vpternlogd zmm31, zmm31, zmm31, 0xff",
                "kxnorw k0, k0, k0",
                "kxnorw k1, k1, k1",
                "kxnorw k2, k2, k2",
                "kxnorw k3, k3, k3",
                "kxnorw k4, k4, k4",
                "kxnorw k5, k5, k5",
                "kxnorw k6, k6, k6",
                "kxnorw k7, k7, k7",
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
                out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
                out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
                out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _,
                out("zmm28") _, out("zmm29") _, out("zmm30") _, out("zmm31") _,
                out("k0") _, out("k1") _, out("k2") _, out("k3") _, out("k4") _, out("k5") _, out("k6") _, out("k7") _,
                options(nostack, nomem, preserves_flags)
            );
            clear_vector_registers();
            asm!(
                "vmovdqu64 zmmword ptr [{z} + 0], zmm0",
                "vmovdqu64 zmmword ptr [{z} + 64], zmm1",
                "vmovdqu64 zmmword ptr [{z} + 128], zmm2",
                "vmovdqu64 zmmword ptr [{z} + 192], zmm3",
                "vmovdqu64 zmmword ptr [{z} + 256], zmm4",
                "vmovdqu64 zmmword ptr [{z} + 320], zmm5",
                "vmovdqu64 zmmword ptr [{z} + 384], zmm6",
                "vmovdqu64 zmmword ptr [{z} + 448], zmm7",
                "vmovdqu64 zmmword ptr [{z} + 512], zmm8",
                "vmovdqu64 zmmword ptr [{z} + 576], zmm9",
                "vmovdqu64 zmmword ptr [{z} + 640], zmm10",
                "vmovdqu64 zmmword ptr [{z} + 704], zmm11",
                "vmovdqu64 zmmword ptr [{z} + 768], zmm12",
                "vmovdqu64 zmmword ptr [{z} + 832], zmm13",
                "vmovdqu64 zmmword ptr [{z} + 896], zmm14",
                "vmovdqu64 zmmword ptr [{z} + 960], zmm15",
                "vmovdqu64 zmmword ptr [{z} + 1024], zmm16",
                "vmovdqu64 zmmword ptr [{z} + 1088], zmm17",
                "vmovdqu64 zmmword ptr [{z} + 1152], zmm18",
                "vmovdqu64 zmmword ptr [{z} + 1216], zmm19",
                "vmovdqu64 zmmword ptr [{z} + 1280], zmm20",
                "vmovdqu64 zmmword ptr [{z} + 1344], zmm21",
                "vmovdqu64 zmmword ptr [{z} + 1408], zmm22",
                "vmovdqu64 zmmword ptr [{z} + 1472], zmm23",
                "vmovdqu64 zmmword ptr [{z} + 1536], zmm24",
                "vmovdqu64 zmmword ptr [{z} + 1600], zmm25",
                "vmovdqu64 zmmword ptr [{z} + 1664], zmm26",
                "vmovdqu64 zmmword ptr [{z} + 1728], zmm27",
                "vmovdqu64 zmmword ptr [{z} + 1792], zmm28",
                "vmovdqu64 zmmword ptr [{z} + 1856], zmm29",
                "vmovdqu64 zmmword ptr [{z} + 1920], zmm30",
                "vmovdqu64 zmmword ptr [{z} + 1984], zmm31",
                "kmovw word ptr [{k} + 0], k0",
                "kmovw word ptr [{k} + 2], k1",
                "kmovw word ptr [{k} + 4], k2",
                "kmovw word ptr [{k} + 6], k3",
                "kmovw word ptr [{k} + 8], k4",
                "kmovw word ptr [{k} + 10], k5",
                "kmovw word ptr [{k} + 12], k6",
                "kmovw word ptr [{k} + 14], k7",
                z = in(reg) z.as_mut_ptr(),
                k = in(reg) k.as_mut_ptr(),
                options(nostack, preserves_flags)
            );
        }
        assert!(z.iter().all(|&b| b == 0), "a zmm register kept data");
        assert_eq!(k, [0u16; 8], "an opmask register kept data");
    }
}
