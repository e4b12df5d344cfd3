"""Common microcontroller boards and whether the release fits on each with room left for the application."""
from __future__ import annotations

from dataclasses import dataclass

KB = 1024


@dataclass(frozen=True)
class Board:
    name: str
    mcu: str
    ram_bytes: int
    flash_bytes: int


# Vendor datasheet figures: on-chip SRAM and the board's program flash (on-chip, or the module's QSPI flash where the
# chip has none). RAM is the whole SRAM; the RTOS/SDK, stacks and buffers come out of it too (see APP_SHARE).
BOARDS = (
    Board("Arduino Nano 33 BLE Sense", "nRF52840 (Cortex-M4F, 64 MHz)", 256 * KB, 1024 * KB),
    Board("Raspberry Pi Pico", "RP2040 (2x Cortex-M0+, 133 MHz)", 264 * KB, 2048 * KB),
    Board("ESP32-S3-DevKitC-1 (N8)", "ESP32-S3 (2x Xtensa LX7, 240 MHz)", 512 * KB, 8192 * KB),
    Board("STM32F746G-DISCO", "STM32F746NG (Cortex-M7, 216 MHz)", 320 * KB, 1024 * KB),
    Board("NUCLEO-L476RG", "STM32L476RG (Cortex-M4F, 80 MHz)", 128 * KB, 1024 * KB),
)

# The share of RAM and of flash the model may take; the rest is left to the application (RTOS or SDK, stacks,
# camera/sensor buffers, the program itself). Half is a rule of thumb, not a measurement.
APP_SHARE = 0.5


def fit(arena_bytes: int, flash_bytes: int, boards: tuple[Board, ...] = BOARDS, share: float = APP_SHARE) -> list[dict]:
    """One row per board: the arena's and the model's share of its RAM and flash, and whether both stay within
    `share` (the rest left to the application)."""
    rows = []
    for b in boards:
        ram_share, flash_share = arena_bytes / b.ram_bytes, flash_bytes / b.flash_bytes
        rows.append({"board": b.name, "mcu": b.mcu, "ram_bytes": b.ram_bytes, "flash_bytes": b.flash_bytes,
                     "arena_share_of_ram": round(ram_share, 4), "model_share_of_flash": round(flash_share, 4),
                     "fits": ram_share <= share and flash_share <= share})
    return rows
